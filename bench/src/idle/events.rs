//! What a worker process tells its parent: one JSON object per stdout line.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One line of a worker's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Running counts while connecting.
    Progress(Counts),
    /// Every connection of the worker has logged in or failed.
    Ramped {
        /// The final counts of the flood.
        counts: Counts,
        /// From the first connect to the last login answer, in seconds.
        ramp_secs: f64,
    },
    /// All connections closed; the worker exits next.
    Done(Summary),
}

/// Connections of one worker by how far they got.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Connection attempts started.
    pub started: u64,
    /// Logged in (and not yet dropped).
    pub logged_in: u64,
    /// Failed to connect or log in.
    pub failed: u64,
}

/// A worker's final figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Login latency in microseconds as (value, count) pairs of the histogram's buckets.
    pub latency_us: Vec<(u64, u64)>,
    /// Failures by kind (connecting, logging in, and while holding).
    pub failures: BTreeMap<String, u64>,
    /// PINGs sent while holding.
    pub pings: u64,
    /// PONGs received while holding.
    pub pongs: u64,
    /// Connections still logged in when the hold ended.
    pub held: u64,
}

/// The largest latency recorded, in microseconds (10 minutes); longer ones count as this.
pub const MAX_LATENCY_US: u64 = 600_000_000;

/// A latency histogram: 1 µs to [`MAX_LATENCY_US`] at three significant figures.
pub fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
}

/// The histogram's recorded buckets, to send in a [`Summary`].
pub fn buckets(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds buckets received from a worker into `histogram`.
pub fn merge(histogram: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(value, count) in buckets {
        // Values come from a histogram of the same bounds; clamp anyway.
        let _ = histogram.record_n(value.clamp(1, MAX_LATENCY_US), count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_sent_over_a_line_merge_into_the_same_percentiles() {
        let mut a = latency_histogram().expect("histogram");
        for v in [100, 200, 300, 5_000, 1_000_000] {
            a.record(v).expect("record");
        }
        let line = serde_json::to_string(&Event::Done(Summary {
            latency_us: buckets(&a),
            ..Summary::default()
        }))
        .expect("encode");
        let Event::Done(summary) = serde_json::from_str(&line).expect("decode") else {
            panic!("not a summary: {line}");
        };
        let mut merged = latency_histogram().expect("histogram");
        merge(&mut merged, &summary.latency_us);
        merge(&mut merged, &summary.latency_us);
        assert_eq!(merged.len(), 10);
        assert_eq!(merged.value_at_quantile(0.5), a.value_at_quantile(0.5));
        assert_eq!(merged.max(), a.max());
    }
}
