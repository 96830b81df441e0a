//! CPU time of a process, of its threads by name, and of processes a run
//! watches (`--cpu NAME=PID`), from `/proc`.

use std::collections::BTreeMap;

use anyhow::Context;

use crate::report::Report;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;
/// FishChat's own services, as `--cpu` names them (the servers they use,
/// Kafka, MongoDB, Redis and etcd, are not ours).
const FISHCHAT_SERVICES: [&str; 6] = [
    "access", "logic", "msg_job", "register", "manager", "gateway",
];

/// User + system CPU seconds of a process (`self` for this one).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User and system CPU seconds of a process, from one reading. The system
/// part is the kernel's share: its system calls and what the kernel does in
/// them on its behalf (on loopback, the receiving end's TCP work too).
pub fn user_and_system_secs(pid: &str) -> Option<(f64, f64)> {
    times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU seconds of a process's threads, summed by thread name
/// (tokio's workers all share one, `tokio-runtime-w`).
pub fn threads(pid: &str) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(name), Some(secs)) = (comm(&stat), ticks(&stat)) else {
            continue;
        };
        *by_name.entry(name).or_insert(0.0) += secs;
    }
    by_name
}

/// The CPU seconds each thread name used between two readings.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, secs)| {
            (
                name.clone(),
                secs - before.get(name).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, secs)| *secs > 0.0)
        .collect()
}

/// User + system CPU seconds of a process and every process below it (a
/// server such as PostgreSQL works in children); `None` once it is gone.
pub fn tree_cpu_secs(pid: u32) -> Option<f64> {
    let own = cpu_secs(&pid.to_string())?;
    let children: f64 = children(pid).into_iter().filter_map(tree_cpu_secs).sum();
    Some(own + children)
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The processes whose CPU a run reports, each by the name it is shown under:
/// every server and service of the deployment, so a reader sees where the
/// cores went next to a throughput figure. The bench itself is watched too
/// whenever anything is, and reported apart from the watched total: on one
/// machine its connections share the cores with the system under test.
#[derive(Debug, Clone, Default)]
pub struct Watched(Vec<(String, u32)>);

/// The name the bench's own process is reported under.
const BENCH: &str = "bench (this process)";

impl Watched {
    /// Parses `NAME=PID` arguments; with any, adds this process as [`BENCH`].
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut watched: Vec<(String, u32)> = args
            .iter()
            .map(|arg| {
                let (name, pid) = arg
                    .split_once('=')
                    .with_context(|| format!("--cpu {arg:?}: expected NAME=PID"))?;
                let pid: u32 = pid
                    .parse()
                    .with_context(|| format!("--cpu {arg:?}: {pid:?} is not a pid"))?;
                anyhow::ensure!(
                    tree_cpu_secs(pid).is_some(),
                    "--cpu {arg:?}: no process {pid}"
                );
                Ok((name.to_owned(), pid))
            })
            .collect::<anyhow::Result<_>>()?;
        if !watched.is_empty() {
            watched.push((BENCH.to_owned(), std::process::id()));
        }
        Ok(Watched(watched))
    }

    /// Each watched process's CPU seconds so far (with its children).
    pub fn sample(&self) -> Vec<Option<f64>> {
        self.0.iter().map(|(_, pid)| tree_cpu_secs(*pid)).collect()
    }

    /// Adds, for each process and for all of them, the CPU seconds used
    /// between `before` and `after`, the cores over `secs`, and the
    /// microseconds per unit of `work` (say, per acked message); then the same
    /// for FishChat's own services together (see [`fishchat_service`]), also
    /// in the report's `details.cpu`.
    pub fn add_to(
        &self,
        report: &mut Report,
        before: &[Option<f64>],
        after: &[Option<f64>],
        secs: f64,
        work: (f64, &str),
    ) {
        let (count, per) = work;
        let mut total = 0.0;
        let mut bench = None;
        let mut services = 0.0;
        let mut service_names = Vec::new();
        for (((name, _), b), a) in self.0.iter().zip(before).zip(after) {
            let Some(used) = a.zip(*b).map(|(a, b)| a - b) else {
                continue;
            };
            if name == BENCH {
                bench = Some(used);
                report.add(&format!("CPU {name}"), used, "s");
                report.add(&format!("CPU {name}"), used / secs.max(1e-9), "cores");
                continue;
            }
            total += used;
            if fishchat_service(name) {
                services += used;
                service_names.push(name.as_str());
            }
            report.add(&format!("CPU {name}"), used, "s");
            report.add(
                &format!("CPU {name} per {per}"),
                used * 1e6 / count.max(1.0),
                "µs",
            );
        }
        if !self.0.is_empty() {
            report.add("CPU watched total", total, "s");
            report.add("CPU watched total", total / secs.max(1e-9), "cores");
            report.add(
                &format!("CPU watched total per {per}"),
                total * 1e6 / count.max(1.0),
                "µs",
            );
        }
        if let Some(bench) = bench {
            report.add(
                "CPU watched total and the bench",
                (total + bench) / secs.max(1e-9),
                "cores",
            );
        }
        if !service_names.is_empty() {
            let per_work = services * 1e6 / count.max(1.0);
            report.add("CPU FishChat services", services, "s");
            report.add(&format!("FishChat services CPU per {per}"), per_work, "µs");
            if !report.details.is_object() {
                report.details = serde_json::json!({});
            }
            report.details["cpu"] = serde_json::json!({
                "fishchat_services": service_names,
                "fishchat_services_cpu_secs": services,
                format!("fishchat_services_us_per_{}", per.replace(' ', "_")): per_work,
            });
        }
    }
}

/// Whether a `--cpu` name is one of FishChat's services: its name, perhaps
/// with a `fishchat-` prefix, `-` for `_`, and an instance number
/// (`access-0`, `msg_job-1`, `fishchat-msg-job`).
pub fn fishchat_service(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    let name = name.strip_prefix("fishchat_").unwrap_or(&name);
    let base = match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    FISHCHAT_SERVICES.contains(&base)
}

/// utime + stime in seconds.
fn ticks(stat: &str) -> Option<f64> {
    times(stat).map(|(user, system)| user + system)
}

/// utime and stime (fields 14 and 15) in seconds; the name may hold spaces,
/// so fields are counted after its closing parenthesis.
fn times(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime / TICKS_PER_SEC, stime / TICKS_PER_SEC))
}

/// The thread name (field 2, between the parentheses).
fn comm(stat: &str) -> Option<String> {
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_name() {
        let stat = "12 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20";
        assert_eq!(ticks(stat), Some(3.0));
        assert_eq!(times(stat), Some((2.5, 0.5)));
        assert_eq!(comm(stat).as_deref(), Some("a b) c"));
    }

    #[test]
    fn fishchat_services_are_told_from_the_servers_they_use() {
        for name in [
            "access-0",
            "access",
            "msg_job-1",
            "fishchat-msg-job",
            "Logic",
            "gateway_12",
        ] {
            assert!(fishchat_service(name), "{name}");
        }
        for name in [
            "kafka", "mongo", "redis", "etcd", "access-x", "msg", "bench",
        ] {
            assert!(!fishchat_service(name), "{name}");
        }
    }

    #[test]
    fn the_services_cpu_per_unit_of_work_sums_only_the_services() {
        let watched = Watched(vec![
            ("access-0".into(), 1),
            ("kafka".into(), 2),
            ("msg_job-0".into(), 3),
            ("gone".into(), 4),
            (BENCH.into(), 5),
        ]);
        let mut report = Report {
            scenario: "p2p".into(),
            config: serde_json::Value::Null,
            figures: Vec::new(),
            details: serde_json::json!({ "totals": {} }),
            charts: Vec::new(),
        };
        let before = [Some(1.0), Some(0.0), Some(2.0), Some(0.0), Some(3.0)];
        let after = [Some(1.5), Some(4.0), Some(2.25), None, Some(4.0)];
        watched.add_to(&mut report, &before, &after, 2.0, (1000.0, "acked message"));
        let figure = |name: &str| {
            report
                .figures
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value)
                .unwrap_or_else(|| panic!("no figure {name}"))
        };
        assert!((figure("CPU watched total per acked message") - 4750.0).abs() < 1e-6);
        // The bench is reported apart from the total, and beside it.
        assert!((figure(&format!("CPU {BENCH}")) - 1.0).abs() < 1e-6);
        assert!((figure("CPU watched total and the bench") - 2.875).abs() < 1e-6);
        assert!((figure("FishChat services CPU per acked message") - 750.0).abs() < 1e-6);
        let cpu = &report.details["cpu"];
        assert_eq!(
            cpu["fishchat_services"],
            serde_json::json!(["access-0", "msg_job-0"])
        );
        let per = cpu["fishchat_services_us_per_acked_message"]
            .as_f64()
            .unwrap();
        assert!((per - 750.0).abs() < 1e-6);
        assert!(report.details["totals"].is_object(), "details kept");
    }

    #[test]
    fn the_bench_watches_itself_whenever_it_watches_anything() {
        assert!(Watched::parse(&[]).unwrap().0.is_empty());
        let me = std::process::id();
        let watched = Watched::parse(&[format!("me={me}")]).unwrap();
        assert_eq!(watched.0, [("me".to_owned(), me), (BENCH.to_owned(), me)]);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_secs("self").is_some());
        assert!(!threads("self").is_empty());
    }
}
