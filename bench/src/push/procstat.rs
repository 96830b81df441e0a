//! CPU time of a process, and of each of its threads by name, from `/proc`.

use std::collections::BTreeMap;

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
