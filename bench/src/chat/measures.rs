//! The run's distributions: delivery and ack latency, and acks and
//! deliveries per second since the first send.
//!
//! A connection keeps raw [`Samples`] (a few per message: a histogram per
//! connection would cost ~170 KB each, gigabytes at 19,000 connections); its
//! fleet folds them into one [`Measures`], which crosses from a worker
//! process to the parent as histogram buckets and per-second counts.

use hdrhistogram::{CreationError, Histogram};
use serde::{Deserialize, Serialize};

use crate::report::{Chart, Series};

/// The largest latency recorded, µs (ten minutes); longer ones count as this.
const MAX_LATENCY_US: u64 = 600_000_000;

/// What one connection measured, raw.
#[derive(Debug, Default)]
pub struct Samples {
    /// Send-to-PUSH latency of each unique message from others, µs.
    pub latency_us: Vec<u64>,
    /// Send-to-SEND_ACK latency of each answered send, µs.
    pub ack_us: Vec<u64>,
    /// Sends acked without error, per second since the first send.
    pub acked_per_sec: Vec<u64>,
    /// Unique messages from others received by PUSH, per second since the first send.
    pub delivered_per_sec: Vec<u64>,
}

/// Counts one event at `now_us` in the per-second counts of a run whose
/// first send was at `epoch_us`.
pub fn count_second(per_sec: &mut Vec<u64>, epoch_us: u64, now_us: u64) {
    let second = usize::try_from(now_us.saturating_sub(epoch_us) / 1_000_000).unwrap_or(0);
    if per_sec.len() <= second {
        per_sec.resize(second + 1, 0);
    }
    per_sec[second] += 1;
}

/// A fleet's (or the whole run's) distributions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measures {
    /// Send-to-PUSH latency, µs.
    #[serde(with = "buckets")]
    pub latency_us: Histogram<u64>,
    /// Send-to-SEND_ACK latency, µs.
    #[serde(with = "buckets")]
    pub ack_us: Histogram<u64>,
    /// Acks per second since the first send.
    pub acked_per_sec: Vec<u64>,
    /// Deliveries per second since the first send.
    pub delivered_per_sec: Vec<u64>,
}

fn histogram() -> Result<Histogram<u64>, CreationError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
}

/// Adds `from` into `into` second by second.
fn add_seconds(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (sum, n) in into.iter_mut().zip(from) {
        *sum += n;
    }
}

impl Measures {
    /// Nothing measured yet.
    pub fn new() -> Result<Measures, CreationError> {
        Ok(Measures {
            latency_us: histogram()?,
            ack_us: histogram()?,
            acked_per_sec: Vec::new(),
            delivered_per_sec: Vec::new(),
        })
    }

    /// Folds one connection's samples in.
    pub fn add(&mut self, samples: &Samples) {
        for (histogram, values) in [
            (&mut self.latency_us, &samples.latency_us),
            (&mut self.ack_us, &samples.ack_us),
        ] {
            for &v in values {
                let _ = histogram.record(v.clamp(1, MAX_LATENCY_US));
            }
        }
        add_seconds(&mut self.acked_per_sec, &samples.acked_per_sec);
        add_seconds(&mut self.delivered_per_sec, &samples.delivered_per_sec);
    }

    /// Folds another fleet's measures in.
    pub fn merge(&mut self, other: &Measures) -> Result<(), hdrhistogram::AdditionError> {
        self.latency_us.add(&other.latency_us)?;
        self.ack_us.add(&other.ack_us)?;
        add_seconds(&mut self.acked_per_sec, &other.acked_per_sec);
        add_seconds(&mut self.delivered_per_sec, &other.delivered_per_sec);
        Ok(())
    }

    /// The run's charts: latency CDFs and throughput over time.
    pub fn charts(&self) -> Vec<Chart> {
        let per_sec = |label: &str, counts: &[u64]| Series {
            label: label.into(),
            points: counts
                .iter()
                .enumerate()
                .map(|(second, &n)| (second as f64, n as f64))
                .collect(),
        };
        let throughput = Chart::throughput(
            "Acks and deliveries per second",
            "per second",
            vec![
                per_sec("acked/s", &self.acked_per_sec),
                per_sec("delivered/s", &self.delivered_per_sec),
            ],
        );
        vec![
            Chart::latency_cdf(
                "Delivery and ack latency",
                vec![
                    Series::latency_cdf("delivery", &self.latency_us),
                    Series::latency_cdf("ack", &self.ack_us),
                ],
            ),
            Chart {
                x_label: "seconds since the first send".into(),
                ..throughput
            },
        ]
    }
}

/// A histogram as its recorded (value, count) buckets, so it crosses a JSON
/// line whole and merges into the same percentiles.
mod buckets {
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let buckets: Vec<(u64, u64)> = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        buckets.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let buckets = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = super::histogram().map_err(serde::de::Error::custom)?;
        for (value, count) in buckets {
            h.record_n(value.clamp(1, super::MAX_LATENCY_US), count)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_sent_as_a_json_line_merge_into_the_same_figures() {
        let mut a = Samples::default();
        a.latency_us.extend([100, 200, 300, 5_000, 1_000_000]);
        a.ack_us.extend([50, 60]);
        for at in [0, 999_999, 1_000_000, 3_500_000] {
            count_second(&mut a.delivered_per_sec, 0, at);
        }
        let mut b = Samples::default();
        b.latency_us.push(400);
        count_second(&mut b.acked_per_sec, 10_000_000, 11_000_000);
        let mut one = Measures::new().unwrap();
        one.add(&a);
        let mut two = Measures::new().unwrap();
        two.add(&b);
        let line = serde_json::to_string(&one).unwrap();
        let back: Measures = serde_json::from_str(&line).unwrap();
        let mut total = Measures::new().unwrap();
        total.merge(&back).unwrap();
        total.merge(&two).unwrap();
        assert_eq!(total.latency_us.len(), 6);
        assert_eq!(total.latency_us.max(), one.latency_us.max());
        let mut direct = histogram().unwrap();
        for v in [100, 200, 300, 400, 5_000, 1_000_000] {
            direct.record(v).unwrap();
        }
        for q in [0.5, 0.9, 0.99] {
            assert_eq!(
                total.latency_us.value_at_quantile(q),
                direct.value_at_quantile(q)
            );
        }
        assert_eq!(total.ack_us.len(), 2);
        assert_eq!(total.delivered_per_sec, vec![2, 1, 0, 1]);
        assert_eq!(total.acked_per_sec, vec![0, 1]);
    }
}
