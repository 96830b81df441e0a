//! Several hosts on one machine, made of Linux network namespaces, for tests
//! that take one host off the network while the others go on.
//!
//! A [`Network`] is one Ethernet segment: a bridge in a namespace of its own
//! (the "switch") and, per host, a namespace joined to the bridge by a veth
//! pair, with an address in a private /24. Nothing is added to the machine's
//! own namespace: two runs never see each other, no route of the machine
//! changes, traffic stays between the namespaces, and deleting the namespaces
//! removes every link. [`Stack`] runs the real servers (`scripts/stack`) on
//! one such host. Both need root and iproute2's `ip`, and both clean up when
//! dropped, also on a panic; namespaces a killed run left behind are removed
//! by the next run.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::cluster::Servers;
use crate::services::{Host, bin_dir};

/// The first two octets of every network's /24 (a private range).
const SUBNET: [u8; 2] = [10, 213];
/// What every namespace name of this module starts with.
const PREFIX: &str = "fc";
/// The longest host name: a namespace's name (prefix, pid, run letter, `-`,
/// host) stays within 15 characters, as link names must.
const MAX_HOST_NAME: usize = 5;

/// One host of a [`Network`].
#[derive(Debug, Clone)]
pub struct NetHost {
    /// The name the test gave it.
    pub name: String,
    /// Its network namespace, as `ip netns` names it.
    pub netns: String,
    /// Its address (on its `eth0`).
    pub ip: Ipv4Addr,
    /// Its veth's end on the bridge (in the switch namespace).
    port: String,
}

impl NetHost {
    /// This host as a cluster [`Layout`](crate::cluster::Layout) names it.
    pub fn host(&self) -> Host {
        Host {
            ip: self.ip.into(),
            netns: Some(self.netns.clone()),
        }
    }
}

/// Hosts on one bridge, removed (with every process left in them) when dropped.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    switch: String,
    hosts: Vec<NetHost>,
}

impl Network {
    /// Makes one host per name (at most five characters each), addressed
    /// `10.213.x.1`, `.2`, ... in the order given, all up and reachable.
    /// Panics with what to do when not run as root or without `ip`.
    pub fn create(names: &[&str]) -> Network {
        require_root();
        remove_stale();
        let prefix = unique_prefix();
        assert!(names.len() < 200, "at most 200 hosts on a network");
        let third = u8::try_from(std::process::id() % 250).unwrap_or(0) + 1;
        let mut network = Network {
            switch: format!("{prefix}-sw"),
            prefix,
            hosts: Vec::new(),
        };
        // Each step is undone by the drop if a later one fails.
        ip(&["netns", "add", &network.switch]);
        let switch = network.switch.as_str();
        ip(&["-n", switch, "link", "set", "lo", "up"]);
        ip(&["-n", switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            assert!(
                !name.is_empty() && name.len() <= MAX_HOST_NAME,
                "host name {name:?}: 1 to {MAX_HOST_NAME} characters"
            );
            let host = NetHost {
                name: (*name).to_owned(),
                netns: format!("{}-{name}", network.prefix),
                ip: Ipv4Addr::new(SUBNET[0], SUBNET[1], third, 1 + i as u8),
                port: format!("v-{name}"),
            };
            ip(&["netns", "add", &host.netns]);
            network.hosts.push(host.clone());
            let switch = network.switch.as_str();
            let ns = host.netns.as_str();
            // Services bind 127.0.0.1 too (metrics, port checks): lo must be up.
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", switch, "link", "add", &host.port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            ip(&[
                "-n", switch, "link", "set", &host.port, "master", "br0", "up",
            ]);
            let cidr = format!("{}/24", host.ip);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        network
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &NetHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} on this network"))
    }

    /// Takes host `name`'s link down on the bridge side: from then on its
    /// packets go nowhere and nothing reaches it, not even a reset, as when a
    /// machine's cable is pulled; its processes go on running.
    pub fn cut(&self, name: &str) {
        let port = &self.host(name).port;
        ip(&["-n", &self.switch, "link", "set", port, "down"]);
    }

    /// Brings host `name`'s link back up after a [`cut`](Self::cut).
    pub fn restore(&self, name: &str) {
        let port = &self.host(name).port;
        ip(&["-n", &self.switch, "link", "set", port, "up"]);
    }

    /// Runs `f` on a thread of its own inside host `name`'s namespace and
    /// returns what it returns (a panic in it goes on in the caller). Every
    /// socket that thread makes, and every thread or process it starts (a
    /// tokio runtime's workers, say), lives on that host.
    pub fn run_in<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        let netns = self.host(name).netns.clone();
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("host {name}"))
                .spawn_scoped(scope, move || {
                    enter(&netns);
                    f()
                })
                .expect("start a thread");
            match thread.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A folder for this network's files (a host's server data, say),
    /// removed by the next run once this process is gone.
    fn scratch(&self) -> PathBuf {
        scratch_dir(&self.prefix)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in self.hosts.iter().rev() {
            remove_netns(&host.netns);
        }
        remove_netns(&self.switch);
        let _ = std::fs::remove_dir_all(self.scratch());
    }
}

/// Moves the calling thread into network namespace `netns` (a name `ip netns`
/// knows); the threads it starts afterwards are born there too.
pub fn enter(netns: &str) {
    let path = Path::new("/run/netns").join(netns);
    let file = File::open(&path).unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|err| panic!("enter network namespace {netns}: {err}"));
}

/// The real servers (etcd, Redis, Kafka, the MongoDB-protocol server), run
/// by `scripts/stack up` inside one host of a [`Network`], with a state
/// folder of their own, listening on that host's address. Dropping it runs
/// `scripts/stack down --purge` there (after keeping the servers' logs in
/// `target/<profile>/e2e-logs/` when a test failed).
#[derive(Debug)]
pub struct Stack {
    netns: String,
    ip: Ipv4Addr,
    dir: PathBuf,
}

impl Stack {
    /// Starts the servers on `host` of `network` and waits until each answers.
    pub fn up(network: &Network, host: &str) -> Stack {
        let host = network.host(host);
        let stack = Stack {
            netns: host.netns.clone(),
            ip: host.ip,
            dir: network.scratch().join(format!("stack-{}", host.name)),
        };
        let output = stack.run(&["up"]);
        if !output.status.success() {
            panic!(
                "scripts/stack up on host {} ({}) failed ({}):\n{}{}",
                host.name,
                stack.ip,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        stack
    }

    /// How the services reach these servers.
    pub fn servers(&self) -> Servers {
        let ip = self.ip;
        Servers {
            etcd: format!("{ip}:2379"),
            redis: format!("redis://{ip}:6379"),
            kafka: format!("{ip}:9092"),
            mongo: format!("mongodb://{ip}:27017/?directConnection=true"),
        }
    }

    /// Runs `scripts/stack ARGS` inside the host, with this stack's settings.
    fn run(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack");
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(script)
            .args(args)
            .env("FISHCHAT_STACK_DIR", &self.dir)
            .env("FISHCHAT_STACK_HOST", self.ip.to_string())
            // The defaults, whatever the machine's own stack was moved to:
            // the host is a namespace of its own, and servers() names them.
            .env("FISHCHAT_ETCD_PORT", "2379")
            .env("FISHCHAT_ETCD_PEER_PORT", "2380")
            .env("FISHCHAT_REDIS_PORT", "6379")
            .env("FISHCHAT_KAFKA_PORT", "9092")
            .env("FISHCHAT_KAFKA_CONTROLLER_PORT", "9093")
            .env("FISHCHAT_MONGO_PORT", "27017")
            .env("FISHCHAT_MONGO_SERVER", "secantus")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("run scripts/stack {}: {err}", args.join(" ")))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = bin_dir()
                .join("e2e-logs")
                .join(format!("{}-stack", self.netns));
            if copy_dir(&self.dir.join("logs"), &kept).is_ok() {
                eprintln!("the servers' logs are kept in {}", kept.display());
            }
        }
        let output = self.run(&["down", "--purge"]);
        if !output.status.success() {
            eprintln!(
                "scripts/stack down --purge in {} failed ({}): {}",
                self.netns,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Panics, saying what to do, unless namespaces can be made here.
fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test builds hosts from network namespaces (ip netns, veth, a bridge) and must run \
         as root, as CI does: run it as root (for example `sudo -E cargo nextest run -p \
         fishchat-e2e --test hosts`)"
    );
    let found = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs iproute2's `ip` (Debian package iproute2)"
    );
}

/// A namespace prefix no other network of this machine has: this process's
/// id, and a letter beyond the hex digits for each network it made.
fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NETWORKS: AtomicU8 = AtomicU8::new(0);
    let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
    assert!(n < 20, "at most 20 networks per process");
    format!("{PREFIX}{:x}{}", std::process::id(), char::from(b'g' + n))
}

/// The process id a namespace name of this module carries.
fn owner_pid(netns: &str) -> Option<u32> {
    let rest = netns.strip_prefix(PREFIX)?;
    let end = rest.find(|c: char| !c.is_ascii_hexdigit())?;
    let letter = rest[end..].chars().next()?;
    ('g'..='z')
        .contains(&letter)
        .then(|| u32::from_str_radix(&rest[..end], 16).ok())
        .flatten()
}

fn scratch_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fishchat-{prefix}"))
}

/// Removes the namespaces (and their scratch folders) of runs whose process
/// is gone: one killed outright (a hung test ended with SIGKILL) never ran
/// its drops, and its servers would run on, unseen, for good.
fn remove_stale() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(netns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = owner_pid(netns) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("removing network namespace {netns} left by process {pid}, which is gone");
        remove_netns(netns);
        if let Some((prefix, _)) = netns.split_once('-') {
            let _ = std::fs::remove_dir_all(scratch_dir(prefix));
        }
    }
}

/// Kills every process left in `netns` and deletes it; failures are reported, not raised,
/// as this runs in drops.
fn remove_netns(netns: &str) {
    if let Ok(pids) = Command::new("ip").args(["netns", "pids", netns]).output() {
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let pid = pid.parse().ok().and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    if let Err(err) = try_ip(&["netns", "del", netns]) {
        eprintln!("{err}");
    }
}

/// Runs `ip ARGS`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    if let Err(err) = try_ip(args) {
        panic!("{err}");
    }
}

fn try_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("ip {}: {err}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_name_gives_back_the_pid_of_its_run() {
        assert_eq!(owner_pid("fc1a2bg-srv"), Some(0x1a2b));
        assert_eq!(owner_pid("fc1a2bh-sw"), Some(0x1a2b));
        assert_eq!(owner_pid("fc1a2b-srv"), None);
        assert_eq!(owner_pid("fcg-srv"), None);
        assert_eq!(owner_pid("other"), None);
    }
}
