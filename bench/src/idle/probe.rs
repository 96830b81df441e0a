//! What the bench reads from the access processes: resident memory from
//! `/proc/<pid>/status`, and the live connection gauge from `GET /metrics`.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::report::Report;

/// The resident set of process `pid`, in bytes (`VmRSS`).
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status_field_kib(&status, "VmRSS:")
        .map(|kib| kib * 1024)
        .with_context(|| format!("no VmRSS in {path}"))
}

/// The `<field> <n> kB` value of a `/proc/<pid>/status` text.
fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The sum of the resident sets of `pids`.
pub fn rss_sum(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|&pid| rss(pid)).sum()
}

/// `samples` readings of [`rss_sum`], `interval` apart, and their median.
pub async fn rss_median(
    pids: &[u32],
    samples: usize,
    interval: Duration,
) -> anyhow::Result<(u64, Vec<u64>)> {
    let mut readings = Vec::with_capacity(samples.max(1));
    for i in 0..samples.max(1) {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        readings.push(rss_sum(pids)?);
    }
    Ok((median(&readings), readings))
}

/// What one server's memory did in an idle run, in bytes of VmRSS.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Before the flood (median of a few readings).
    pub before: u64,
    /// Idle after the flood (median of `--samples` readings).
    pub idle: u64,
    /// Connections held at the idle readings.
    pub held: u64,
}

impl Memory {
    /// Adds `<who> VmRSS before`, `... idle (median)` and `... per
    /// connection`: the one definition of the idle figure, `(idle - before) /
    /// held`, for every server measured.
    pub fn add_to(&self, report: &mut Report, who: &str) {
        report.add(&format!("{who} VmRSS before"), self.before as f64, "bytes");
        report.add(
            &format!("{who} VmRSS idle (median)"),
            self.idle as f64,
            "bytes",
        );
        report.add(
            &format!("{who} VmRSS per connection"),
            (self.idle as f64 - self.before as f64) / self.held.max(1) as f64,
            "bytes",
        );
    }
}

/// The median (the lower middle one for an even count); 0 for none.
pub fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

/// The sum of `fishchat_access_connections` over the metrics endpoints `addrs`.
pub async fn connections(http: &reqwest::Client, addrs: &[String]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for addr in addrs {
        let url = format!("http://{addr}/metrics");
        let text = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .text()
            .await
            .with_context(|| format!("GET {url}"))?;
        match gauge(&text, "fishchat_access_connections") {
            Some(value) => total += value,
            None => bail!("{url} has no fishchat_access_connections"),
        }
    }
    Ok(total)
}

/// The value of an unlabelled metric in a Prometheus / OpenMetrics text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// This process's soft limit on open files, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_connection_are_the_idle_growth_over_the_connections_held() {
        let mut report = Report {
            scenario: "idle".into(),
            config: serde_json::Value::Null,
            figures: Vec::new(),
            details: serde_json::Value::Null,
            charts: Vec::new(),
        };
        Memory {
            before: 10_000_000,
            idle: 14_750_000,
            held: 19_000,
        }
        .add_to(&mut report, "access");
        let rows: Vec<(&str, f64)> = report
            .figures
            .iter()
            .map(|f| (f.name.as_str(), f.value))
            .collect();
        assert_eq!(
            rows,
            [
                ("access VmRSS before", 10_000_000.0),
                ("access VmRSS idle (median)", 14_750_000.0),
                ("access VmRSS per connection", 250.0),
            ]
        );
    }

    #[test]
    fn vm_rss_is_read_from_a_status_text() {
        let status = "Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS:"), Some(1234));
        assert_eq!(status_field_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss(std::process::id()).expect("own status") > 0);
    }

    #[test]
    fn the_median_is_the_middle_reading() {
        assert_eq!(median(&[5, 1, 3]), 3);
        assert_eq!(median(&[4, 1, 3, 2]), 2);
        assert_eq!(median(&[]), 0);
    }

    #[test]
    fn the_connection_gauge_is_found_and_its_namesakes_are_not() {
        let text = "# HELP fishchat_access_connections Open client connections.\n\
                    # TYPE fishchat_access_connections gauge\n\
                    fishchat_access_connections 19000\n\
                    fishchat_access_connections_total 3\n\
                    # EOF\n";
        assert_eq!(gauge(text, "fishchat_access_connections"), Some(19000.0));
        assert_eq!(gauge("x 1\n", "fishchat_access_connections"), None);
    }

    #[test]
    fn the_open_files_limit_is_read() {
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
