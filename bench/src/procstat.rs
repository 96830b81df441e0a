//! CPU time of a process, of its threads by name, and of processes a run
//! watches (`--cpu NAME=PID`), from `/proc`.

use std::collections::BTreeMap;

use anyhow::Context;

use crate::report::Report;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of a process (`self` for this one).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
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
/// cores went next to a throughput figure.
#[derive(Debug, Clone, Default)]
pub struct Watched(Vec<(String, u32)>);

impl Watched {
    /// Parses `NAME=PID` arguments.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        args.iter()
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
            .collect::<anyhow::Result<_>>()
            .map(Watched)
    }

    /// Each watched process's CPU seconds so far (with its children).
    pub fn sample(&self) -> Vec<Option<f64>> {
        self.0.iter().map(|(_, pid)| tree_cpu_secs(*pid)).collect()
    }

    /// Adds, for each process and for all of them, the CPU seconds used
    /// between `before` and `after`, the cores over `secs`, and the
    /// microseconds per unit of `work` (say, per acked message).
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
        for (((name, _), b), a) in self.0.iter().zip(before).zip(after) {
            let Some(used) = a.zip(*b).map(|(a, b)| a - b) else {
                continue;
            };
            total += used;
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
    }
}

/// utime + stime (fields 14 and 15) in seconds; the name may hold spaces, so
/// fields are counted after its closing parenthesis.
fn ticks(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
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
        assert_eq!(comm(stat).as_deref(), Some("a b) c"));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_secs("self").is_some());
        assert!(!threads("self").is_empty());
    }
}
