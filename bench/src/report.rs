//! A benchmark's result: a table on stdout, a JSON file, and a PNG per chart.

use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::plot;

/// Most points of a latency CDF (the line is drawn on a log axis, so more
/// would not show).
const CDF_POINTS: usize = 300;

/// One named figure of a run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// The figures of one scenario run with the configuration that produced them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's name (also the JSON file's stem).
    pub scenario: String,
    /// The run's parameters.
    pub config: serde_json::Value,
    /// The measured figures, in print order.
    pub figures: Vec<Figure>,
    /// Anything else a scenario records for later reading (raw samples, breakdowns).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// The run's plots, saved as data in the JSON and drawn as PNG files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<Chart>,
}

/// How a chart's points are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    /// A latency distribution: x is the latency in ms (log scale), y the fraction
    /// of samples at or below it (0..=1).
    LatencyCdf,
    /// A quantity over the run: x is seconds since the scenario started.
    OverTime,
    /// y against x, both as given (memory against connections).
    Xy,
}

/// One line of a chart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    /// The legend entry (a target such as `access` or `tokio`).
    pub label: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

/// A plot of one or more series, drawn to `<out-dir>/<scenario>-<name>.png`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chart {
    /// File-name part and identifier, e.g. `latency-cdf`.
    pub name: String,
    /// The chart's title.
    pub title: String,
    /// How to read (and draw) the points.
    pub kind: ChartKind,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// The lines, each with its legend entry.
    pub series: Vec<Series>,
}

impl Series {
    /// The distribution of a histogram of microseconds as a CDF: x in ms, y the
    /// fraction of samples at or below x; at most [`CDF_POINTS`] points, spaced
    /// evenly on a log scale from the smallest to the largest value, the
    /// largest always kept (at 1.0). An empty histogram gives no points.
    pub fn latency_cdf(label: &str, histogram: &Histogram<u64>) -> Self {
        let mut points = Vec::new();
        if !histogram.is_empty() {
            let lowest = histogram.min().max(1) as f64;
            let span = histogram.max().max(1) as f64 / lowest;
            let step = span.powf(1.0 / CDF_POINTS as f64);
            let mut kept = 0.0;
            let mut seen = 0;
            for bucket in histogram.iter_recorded() {
                seen += bucket.count_since_last_iteration();
                let us = bucket.value_iterated_to() as f64;
                if points.is_empty() || us >= kept * step || seen == histogram.len() {
                    points.push((us / 1000.0, seen as f64 / histogram.len() as f64));
                    kept = us;
                }
            }
        }
        Self {
            label: label.into(),
            points,
        }
    }

    /// Rates from readings of a cumulative counter, `(seconds, count)` in time
    /// order: one point per interval between two readings, at its end, of the
    /// count's growth per second over it.
    pub fn rates(label: &str, readings: &[(f64, u64)]) -> Self {
        let points = readings
            .windows(2)
            .filter_map(|pair| {
                let [(t0, c0), (t1, c1)] = [pair[0], pair[1]];
                let secs = t1 - t0;
                (secs > 0.0).then(|| (t1, c1.saturating_sub(c0) as f64 / secs))
            })
            .collect();
        Self {
            label: label.into(),
            points,
        }
    }
}

impl Chart {
    /// A latency distribution (name `latency-cdf`).
    pub fn latency_cdf(title: &str, series: Vec<Series>) -> Self {
        Self::new("latency-cdf", title, ChartKind::LatencyCdf, series)
            .axes("latency (ms, log scale)", "fraction of samples at or below")
    }

    /// Deliveries per second over the measured window (name `throughput`).
    pub fn throughput(title: &str, unit: &str, series: Vec<Series>) -> Self {
        Self::new("throughput", title, ChartKind::OverTime, series)
            .axes("seconds since the measurement started", unit)
    }

    /// Connections set up (logged in, subscribed) over the flood and the hold
    /// (name `ramp`).
    pub fn ramp(title: &str, series: Vec<Series>) -> Self {
        Self::new("ramp", title, ChartKind::OverTime, series)
            .axes("seconds since the flood started", "connections set up")
    }

    /// A latency of each round of a scenario that measures in rounds (name `rounds`).
    pub fn per_round(title: &str, series: Vec<Series>) -> Self {
        Self::new("rounds", title, ChartKind::Xy, series).axes("round", "latency (ms)")
    }

    /// The server's resident memory against its connections (name `memory`).
    pub fn memory(title: &str, series: Vec<Series>) -> Self {
        Self::new("memory", title, ChartKind::Xy, series)
            .axes("connections set up", "server VmRSS (MB)")
    }

    /// The same chart under another name, for a report with two of a kind.
    pub fn named(self, name: &str) -> Self {
        Self {
            name: name.into(),
            ..self
        }
    }

    fn new(name: &str, title: &str, kind: ChartKind, series: Vec<Series>) -> Self {
        Self {
            name: name.into(),
            title: title.into(),
            kind,
            x_label: String::new(),
            y_label: String::new(),
            series,
        }
    }

    fn axes(self, x_label: &str, y_label: &str) -> Self {
        Self {
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..self
        }
    }
}

impl Report {
    /// Adds a figure.
    pub fn add(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
        });
    }

    /// Prints the figures as an aligned table.
    pub fn print(&self) {
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
        println!("{} {}", self.scenario, self.config);
        for f in &self.figures {
            // A ratio such as 0.0204 would read 0.02 at two decimals.
            let decimals = if f.unit == "x" { 4 } else { 2 };
            println!("  {:<width$}  {:>16.decimals$} {}", f.name, f.value, f.unit);
        }
    }

    /// Writes `<dir>/<scenario>.json`, then draws every chart to
    /// `<dir>/<scenario>-<chart>.png` (printing each path), and returns the
    /// JSON's path. The JSON is written first so that the figures survive a
    /// drawing failure; every chart is tried, and the first failure returned.
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))?;
        let mut failed = None;
        for chart in &self.charts {
            let png = dir.join(format!("{}-{}.png", self.scenario, chart.name));
            match plot::draw(chart, &png) {
                Ok(()) => println!("saved {}", png.display()),
                Err(err) => {
                    let err = err.context(format!(
                        "draw {} (the figures are saved in {})",
                        png.display(),
                        path.display()
                    ));
                    failed.get_or_insert(err);
                }
            }
        }
        failed.map_or(Ok(path), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_cdf_climbs_to_one_in_ms_with_few_points() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        for us in 1..=100_000u64 {
            h.record(us * 10).expect("record");
        }
        let cdf = Series::latency_cdf("access", &h);
        assert_eq!(cdf.label, "access");
        assert!(
            cdf.points.len() <= CDF_POINTS + 2,
            "{} points",
            cdf.points.len()
        );
        assert!(cdf.points.len() > 100, "{} points", cdf.points.len());
        let (first, last) = (cdf.points[0], cdf.points[cdf.points.len() - 1]);
        assert!((first.0 - 0.01).abs() < 0.001, "{first:?}");
        assert!((last.0 - 1000.0).abs() < 1.0 && last.1 == 1.0, "{last:?}");
        assert!(
            cdf.points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        // The first point at or past the median is within one log step (4%) of 500 ms.
        let half = cdf.points.iter().find(|p| p.1 >= 0.5).expect("a median");
        assert!(half.0 >= 499.0 && half.0 < 500.0 * 1.05, "{half:?}");
        assert!((half.1 - half.0 / 1000.0).abs() < 0.001, "{half:?}");
    }

    #[test]
    fn a_latency_cdf_of_one_value_or_none() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        assert!(Series::latency_cdf("x", &h).points.is_empty());
        h.record_n(2_000, 5).expect("record");
        assert_eq!(Series::latency_cdf("x", &h).points, [(2.0, 1.0)]);
    }

    #[test]
    fn rates_are_per_interval_and_skip_empty_intervals() {
        let readings = [
            (0.0, 0),
            (1.0, 100),
            (2.0, 300),
            (2.0, 300),
            (2.5, 350),
            (3.5, 340),
        ];
        let rates = Series::rates("tokio", &readings);
        assert_eq!(rates.label, "tokio");
        assert_eq!(
            rates.points,
            [(1.0, 100.0), (2.0, 200.0), (2.5, 100.0), (3.5, 0.0)]
        );
        assert!(Series::rates("x", &[(0.0, 5)]).points.is_empty());
        assert!(Series::rates("x", &[]).points.is_empty());
    }

    #[test]
    fn save_writes_the_json_then_a_png_per_chart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = Report {
            scenario: "push".into(),
            config: serde_json::json!({"connections": 2}),
            figures: Vec::new(),
            details: serde_json::Value::Null,
            charts: vec![
                Chart::latency_cdf("latency", vec![Series::default()]),
                Chart::throughput("throughput", "frames/s", Vec::new()),
            ],
        };
        let json = report.save(dir.path()).expect("saved");
        assert_eq!(json, dir.path().join("push.json"));
        let back: Report =
            serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("a report");
        let names: Vec<_> = back.charts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["latency-cdf", "throughput"]);
        assert_eq!(back.charts[1].kind, ChartKind::OverTime);
        for name in ["push-latency-cdf.png", "push-throughput.png"] {
            let png = std::fs::read(dir.path().join(name)).expect("a PNG");
            assert_eq!(&png[1..4], b"PNG");
        }
    }

    #[test]
    fn a_chart_that_cannot_be_drawn_fails_the_save_after_the_json_and_the_others() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A directory where the first PNG should go: that file cannot be written.
        std::fs::create_dir(dir.path().join("idle-latency-cdf.png")).expect("mkdir");
        let report = Report {
            scenario: "idle".into(),
            config: serde_json::Value::Null,
            figures: Vec::new(),
            details: serde_json::Value::Null,
            charts: vec![
                Chart::latency_cdf("latency", Vec::new()),
                Chart::ramp("ramp", Vec::new()),
            ],
        };
        let err = report
            .save(dir.path())
            .expect_err("a chart cannot be drawn");
        assert!(
            format!("{err:#}").contains("idle-latency-cdf.png"),
            "{err:#}"
        );
        assert!(dir.path().join("idle.json").is_file());
        assert!(dir.path().join("idle-ramp.png").is_file());
    }
}
