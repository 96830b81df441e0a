//! FishChat services as child processes, for tests that must kill one (-9)
//! and start it again.
//!
//! A test configures each service through its environment overrides
//! (`FISHCHAT_<SERVICE>_<KEY>`), so every test runs its own isolated cluster
//! (own ports, etcd namespace, topics, database) beside any other. Output goes
//! to `target/e2e-logs/<cluster>/<service>.log`, which a failing test names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::wait_until;

/// The folder holding the workspace's built binaries (`target/debug` or
/// `target/release`): the test executable lives in its `deps/` subfolder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}

/// Where [`free_port`] looks: below Linux's ephemeral range (32768 and up by
/// default), which outgoing connections draw their local ports from. A port
/// taken from that range could be handed to some client's connection between
/// the check and the service's bind, and the service would fail to listen
/// while another server answered its health check in its place.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port that was free a moment ago on 127.0.0.1, outside the ephemeral range,
/// and claimed by no other test process while this one lives. A cluster draws
/// all its ports before its services bind them, and a service restarted by a
/// test leaves its port unbound for a moment: without the claim, another test
/// process (nextest runs each test in its own) could take it in that gap and
/// the restart would fail to bind.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    // The lock files stay open, so their locks last as long as the process.
    static CLAIMS: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let claims_dir = std::env::temp_dir().join("fishchat-e2e-ports");
    std::fs::create_dir_all(&claims_dir).expect("create the port claims folder");
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    loop {
        let seed = u64::from(std::process::id()) * 7_919
            + DRAWS.fetch_add(1, Ordering::Relaxed) * 104_729
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()));
        let port = TEST_PORTS.start + (seed % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let claim = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(claims_dir.join(port.to_string()))
            .expect("open a port claim");
        // A lock this process already holds is refused too, as the file is a
        // new open file description: a port is never handed out twice.
        if claim.try_lock().is_ok() {
            CLAIMS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(claim);
            return port;
        }
    }
}

/// Where a process runs: the address its listeners bind, and the network
/// namespace it runs in (`None`: the test's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The address of this host that services on it listen on.
    pub ip: IpAddr,
    /// The network namespace (a name `ip netns` knows) of this host.
    pub netns: Option<String>,
}

impl Host {
    /// 127.0.0.1 in the test's own network namespace.
    pub fn local() -> Host {
        Host {
            ip: Ipv4Addr::LOCALHOST.into(),
            netns: None,
        }
    }

    /// An address on this host with a port from [`free_port`]. Inside a
    /// namespace of its own every port is free; the claim still keeps a
    /// cluster's ports apart.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, free_port())
    }
}

/// One service process, stopped when dropped.
pub struct ServiceProcess {
    binary: PathBuf,
    netns: Option<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `binary` (a workspace binary name) with `env`, logging to `log_dir`.
    pub fn start(binary: &str, env: Vec<(String, String)>, log_dir: &Path) -> Self {
        Self::start_in(None, binary, env, log_dir)
    }

    /// Like [`start`](Self::start), in network namespace `netns` (through
    /// `ip netns exec`, which execs the binary in its own process, so the
    /// child's pid is the service's and killing it kills the service).
    pub fn start_in(
        netns: Option<&str>,
        binary: &str,
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> Self {
        let path = bin_dir().join(binary);
        assert!(
            path.exists(),
            "{} is not built: run `cargo build --workspace` (cargo nextest run --workspace builds it)",
            path.display()
        );
        std::fs::create_dir_all(log_dir).expect("create the log folder");
        let mut process = Self {
            binary: path,
            netns: netns.map(str::to_owned),
            env,
            log: log_dir.join(format!("{binary}.log")),
            child: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the service log");
        let err = log.try_clone().expect("clone the log handle");
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its exit status, once it has ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its resident memory in bytes (VmRSS), while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid()?)
    }

    /// Sends SIGTERM and waits up to `deadline` for it to exit; its exit
    /// status when it did (`None`: still running, or not running at all).
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sets one more environment variable for the next start (see [`restart`](Self::restart)).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts it again with the same settings.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until the gRPC health service at `addr` reports SERVING.
pub async fn wait_healthy(addr: &str, deadline: Duration) {
    wait_status(addr, "", ServingStatus::Serving, deadline).await;
}

/// Waits until the gRPC health service at `addr` reports `want` for
/// `service` (`""`: the process as a whole).
pub async fn wait_status(addr: &str, service: &str, want: ServingStatus, deadline: Duration) {
    let what = format!("{addr} to report {want:?} for {service:?}");
    wait_until(deadline, &what, async || {
        let channel = fishchat_discovery::endpoint_for(addr)
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut client = HealthClient::new(channel);
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let reply = client.check(request).await.ok()?.into_inner();
        (reply.status == want as i32).then_some(())
    })
    .await;
}

/// The resident memory of process `pid` in bytes (VmRSS), while it runs.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
