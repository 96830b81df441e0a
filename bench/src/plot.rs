//! Draws a report's [`Chart`] as a PNG with `plotters`.
//!
//! Text is rendered by `ab_glyph` (pure Rust) from a TrueType font read at run
//! time, so the bench needs no fontconfig or freetype: the font is
//! `$FISHCHAT_BENCH_FONT`, else DejaVu Sans from Debian's `fonts-dejavu-core`.
//! Whatever the data (no points, one point, NaN, zeros on a log axis), a chart
//! is drawn: points that cannot be placed are left out, and degenerate axis
//! ranges are widened.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::{Chart, ChartKind};

/// Width of a chart in pixels.
pub const WIDTH: u32 = 1000;
/// Height of a chart in pixels.
pub const HEIGHT: u32 = 600;
/// The environment variable naming the font file to use.
const FONT_ENV: &str = "FISHCHAT_BENCH_FONT";
/// The font used when [`FONT_ENV`] is unset (Debian package `fonts-dejavu-core`).
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The family every text of a chart asks for (plotters' default for legends).
const FAMILY: &str = "sans-serif";
/// Line colours, one per series in order (matplotlib's "tab10").
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `chart` to the PNG file `path`, [`WIDTH`] × [`HEIGHT`].
pub fn draw(chart: &Chart, path: &Path) -> anyhow::Result<()> {
    load_font()?;
    let lines = drawable(chart);
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = || lines.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let ys = || lines.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    match chart.kind {
        ChartKind::LatencyCdf => {
            let x = Axis {
                range: log_range(xs()).log_scale(),
                labels: LOG_LABELS,
                tick: log_tick,
            };
            plot(&root, chart, &lines, x, 0.0..1.05)?;
        }
        ChartKind::OverTime => {
            let x = Axis::linear(linear_range(xs(), true));
            plot(&root, chart, &lines, x, linear_range(ys(), true))?;
        }
        ChartKind::Xy => {
            let x = Axis::linear(linear_range(xs(), false));
            plot(&root, chart, &lines, x, linear_range(ys(), false))?;
        }
    }
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Each series' label and the points that can be drawn: finite, and with a
/// positive x on the log axis of a CDF.
fn drawable(chart: &Chart) -> Vec<(&str, Vec<(f64, f64)>)> {
    let log_x = chart.kind == ChartKind::LatencyCdf;
    chart
        .series
        .iter()
        .map(|s| {
            let points = s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log_x || x > 0.0))
                .collect();
            (s.label.as_str(), points)
        })
        .collect()
}

/// The x axis of a chart: its range (linear or log) and how it is labelled.
struct Axis<X> {
    range: X,
    /// How many tick marks plotters is asked for at most.
    labels: usize,
    /// The label of a tick mark (empty for a bare mark).
    tick: fn(f64) -> String,
}

impl Axis<Range<f64>> {
    fn linear(range: Range<f64>) -> Self {
        Self {
            range,
            labels: 10,
            tick,
        }
    }
}

/// Tick marks asked for on a log axis: enough that plotters marks 1..9 of
/// every decade when the data spans few (it marks only the powers of ten
/// when they alone exceed this).
const LOG_LABELS: usize = 40;

/// Draws the axes, the lines and the legend on `root`.
fn plot<X>(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    chart: &Chart,
    lines: &[(&str, Vec<(f64, f64)>)],
    x: Axis<X>,
    y: Range<f64>,
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FAMILY, 26))
        .margin(20)
        .margin_right(35)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(x.range, y)?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .axis_desc_style((FAMILY, 18))
        .label_style((FAMILY, 15))
        .x_labels(x.labels)
        .x_label_formatter(&|v| (x.tick)(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_max_light_lines(4)
        .y_max_light_lines(4)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // A line needs two points: mark the points where there are few.
    let marks = matches!(chart.kind, ChartKind::OverTime | ChartKind::Xy);
    for (i, (label, points)) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let size = if marks || points.len() < 2 { 3 } else { 0 };
        ctx.draw_series(
            LineSeries::new(points.iter().copied(), colour.stroke_width(2)).point_size(size),
        )?
        .label(*label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3)));
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A linear axis over `values` with 5% room at each end, from 0 when no
/// value is negative and `from_zero` (quantities over time) or 0 is close (a
/// fifth of the span). 0..1 for no values; one value gets ±10% (±1 for 0).
fn linear_range(values: impl Iterator<Item = f64>, from_zero: bool) -> Range<f64> {
    let Some((lo, hi)) = bounds(values) else {
        return 0.0..1.0;
    };
    let lo = if from_zero { lo.min(0.0) } else { lo };
    if lo == hi && from_zero && lo == 0.0 {
        return 0.0..1.0;
    }
    if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad)..(hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    let lo = if lo >= 0.0 && lo - pad * 4.0 <= 0.0 {
        0.0
    } else {
        lo - pad
    };
    lo..(hi + pad)
}

/// A log axis over the positive `values`: from the power of ten at or below
/// the smallest (plotters marks a log axis only from its first power of ten
/// on, so the start is nudged below it against rounding) to a quarter decade
/// above the largest; about 0.1..10 for none.
fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let room = 10f64.powf(0.25);
    let (lo, hi) = bounds(values.filter(|v| *v > 0.0)).unwrap_or((0.1, 10.0 / room));
    10f64.powf(lo.log10().floor()) * (1.0 - 1e-9)..hi * room
}

/// The smallest and the largest finite value, if any.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

/// An axis tick: three significant figures at most, k and M for thousands
/// and millions.
fn tick(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = match scaled.abs() {
        0.0 => 0,
        a => (2 - a.log10().floor() as i32).clamp(0, 6) as usize,
    };
    let text = format!("{scaled:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{suffix}")
}

/// A log axis' tick: labelled at 1, 2 and 5 times a power of ten, bare
/// elsewhere.
fn log_tick(v: f64) -> String {
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6 * m)
    {
        tick(v)
    } else {
        String::new()
    }
}

/// Registers the font once per process; every later call returns the first
/// outcome.
fn load_font() -> anyhow::Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = std::env::var_os(FONT_ENV)
                .map_or_else(|| PathBuf::from(DEFAULT_FONT), PathBuf::from);
            register(&path).map_err(|err| format!("{err:#}"))
        })
        .clone()
        .map_err(|err| anyhow!(err))
}

/// Reads the font at `path` and registers it as [`FAMILY`]; its bytes live
/// as long as the process, as plotters requires.
fn register(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "no chart font at {}: install the Debian package fonts-dejavu-core, \
             or set {FONT_ENV} to a TrueType font file",
            path.display()
        )
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a TrueType or OpenType font", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Series;

    fn chart(kind: ChartKind, series: Vec<Series>) -> Chart {
        Chart {
            name: "test".into(),
            title: "a test chart".into(),
            kind,
            x_label: "x".into(),
            y_label: "y".into(),
            series,
        }
    }

    fn series(label: &str, points: &[(f64, f64)]) -> Series {
        Series {
            label: label.into(),
            points: points.to_vec(),
        }
    }

    /// The width and height in a PNG's IHDR chunk, after checking the signature.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).expect("the PNG was written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        assert_eq!(&bytes[12..16], b"IHDR");
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (word(16), word(20))
    }

    fn draws(chart: &Chart) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chart.png");
        draw(chart, &path).expect("drawn");
        assert_eq!(png_size(&path), (WIDTH, HEIGHT));
    }

    #[test]
    fn every_kind_draws_a_png_of_the_chart_size() {
        let cdf: Vec<(f64, f64)> = (1..=50)
            .map(|i| (0.01 * f64::from(i).powi(2), f64::from(i) / 50.0))
            .collect();
        draws(&chart(
            ChartKind::LatencyCdf,
            vec![series("access", &cdf), series("tokio", &cdf[10..])],
        ));
        let time: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 1000.0 * f64::from(i % 3)))
            .collect();
        draws(&chart(
            ChartKind::OverTime,
            vec![series("access", &time), series("tokio", &time[2..])],
        ));
        draws(&chart(
            ChartKind::Xy,
            vec![series(
                "mosquitto",
                &[(0.0, 8.4), (1000.0, 9.4), (1000.0, 9.5)],
            )],
        ));
    }

    #[test]
    fn degenerate_data_still_draws() {
        for kind in [ChartKind::LatencyCdf, ChartKind::OverTime, ChartKind::Xy] {
            draws(&chart(kind, Vec::new()));
            draws(&chart(kind, vec![series("empty", &[])]));
            draws(&chart(kind, vec![series("one", &[(2.0, 0.5)])]));
            draws(&chart(
                kind,
                vec![series("flat", &[(0.0, 0.0), (0.0, 0.0)])],
            ));
            draws(&chart(
                kind,
                vec![series("zeros", &[(0.0, 0.3), (0.0, 1.0)])],
            ));
            draws(&chart(
                kind,
                vec![series(
                    "bad",
                    &[
                        (f64::NAN, 1.0),
                        (1.0, f64::INFINITY),
                        (f64::NEG_INFINITY, 0.5),
                        (3.0, 0.5),
                    ],
                )],
            ));
            draws(&chart(
                kind,
                vec![series("negative", &[(-5.0, -1.0), (-1.0, -3.0)])],
            ));
        }
    }

    #[test]
    fn axis_ranges_widen_degenerate_data() {
        let linear = |values: &[f64], from_zero| linear_range(values.iter().copied(), from_zero);
        assert_eq!(linear(&[], false), 0.0..1.0);
        assert_eq!(linear(&[0.0, 0.0], false), -1.0..1.0);
        assert_eq!(linear(&[0.0, 0.0], true), 0.0..1.0);
        assert_eq!(linear(&[10.0], false), 9.0..11.0);
        assert_eq!(linear(&[10.0], true), 0.0..10.5);
        assert_eq!(linear(&[f64::NAN, 2.0, 12.0], false), 0.0..12.5);
        assert_eq!(linear(&[100.0, 110.0], false), 99.5..110.5);
        assert_eq!(linear(&[100.0, 110.0], true), 0.0..115.5);
        assert_eq!(linear(&[-10.0, 10.0], true), -11.0..11.0);
        let log = |values: &[f64]| {
            let r = log_range(values.iter().copied());
            // Rounded to 7 significant figures.
            let round = |v: f64| format!("{v:.6e}").parse::<f64>().expect("a number");
            (round(r.start), round(r.end))
        };
        assert_eq!(log(&[0.0, -1.0]), (0.1, 10.0));
        assert_eq!(log(&[0.0, 1.0, 100.0]), (1.0, 177.8279));
        assert_eq!(log(&[2.0]), (1.0, 3.556559));
        assert_eq!(log(&[0.18, 21.0]), (0.1, 37.34387));
        assert!(log_range([0.1].into_iter()).start < 0.1);
    }

    #[test]
    fn ticks_are_short() {
        for (value, text) in [
            (0.0, "0"),
            (0.001, "0.001"),
            (0.25, "0.25"),
            (1.0, "1"),
            (12.5, "12.5"),
            (999.0, "999"),
            (2000.0, "2k"),
            (1250.0, "1.25k"),
            (150_000.0, "150k"),
            (1_500_000.0, "1.5M"),
            (-20.0, "-20"),
        ] {
            assert_eq!(tick(value), text);
        }
    }

    #[test]
    fn log_ticks_are_labelled_at_one_two_and_five() {
        for (value, text) in [
            (0.1, "0.1"),
            (0.2, "0.2"),
            (0.30000000000000004, ""),
            (5000.0, "5k"),
            (7.0, ""),
            (100.0, "100"),
        ] {
            assert_eq!(log_tick(value), text);
        }
    }

    #[test]
    fn a_missing_font_names_the_package() {
        let err = register(Path::new("/nonexistent/font.ttf")).expect_err("no such file");
        assert!(format!("{err:#}").contains("fonts-dejavu-core"), "{err:#}");
        let dir = tempfile::tempdir().expect("temp dir");
        let junk = dir.path().join("junk.ttf");
        std::fs::write(&junk, b"not a font").expect("write");
        let err = register(&junk).expect_err("not a font");
        assert!(err.to_string().contains("not a TrueType"), "{err}");
    }
}
