//! Where a run is, for the person watching: a bar per phase on a terminal,
//! or a plain line every few seconds when stderr is not one (a CI log, a
//! file). Shared by every scenario that takes long.

use std::cell::Cell;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The bar of the current phase.
pub struct Progress {
    bar: ProgressBar,
    /// Not a terminal: print lines instead of drawing.
    plain: bool,
    name: Cell<&'static str>,
    printed: Cell<std::time::Instant>,
}

impl Progress {
    /// A hidden bar until the first phase.
    pub fn new() -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        let style = ProgressStyle::with_template(
            "{prefix:>11} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        );
        bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
        Progress {
            bar,
            plain: !std::io::stderr().is_terminal(),
            name: Cell::new(""),
            printed: Cell::new(std::time::Instant::now()),
        }
    }

    /// Starts the phase `name`, whose bar fills up to `len`.
    pub fn phase(&self, name: &'static str, len: u64) {
        self.bar.reset();
        self.bar.set_prefix(name);
        self.bar.set_length(len);
        self.name.set(name);
        self.printed.set(std::time::Instant::now());
        if self.plain {
            eprintln!("{name}...");
        }
    }

    /// Shows `pos` of `len` and what else is worth saying.
    pub fn show(&self, pos: u64, len: u64, message: String) {
        self.bar.set_length(len);
        self.update(pos, message);
    }

    /// Shows `pos` of the phase's length and what else is worth saying.
    pub fn update(&self, pos: u64, message: String) {
        let len = self.bar.length().unwrap_or(pos);
        self.bar.set_position(pos.min(len));
        if self.plain && self.printed.get().elapsed() >= PLAIN_EVERY {
            self.printed.set(std::time::Instant::now());
            eprintln!("{}: {pos}/{len} {message}", self.name.get());
        }
        self.bar.set_message(message);
    }

    /// The bar itself, for a step that draws its own progress.
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Clears the bar once the run is over.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
