//! A benchmark's result: a table on stdout and a JSON file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// One named figure of a run.
#[derive(Debug, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// The figures of one scenario run with the configuration that produced them.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The scenario's name (also the JSON file's stem).
    pub scenario: String,
    /// The run's parameters.
    pub config: serde_json::Value,
    /// The measured figures, in print order.
    pub figures: Vec<Figure>,
    /// Anything else a scenario records for later reading (raw samples, breakdowns).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
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
            println!("  {:<width$}  {:>16.2} {}", f.name, f.value, f.unit);
        }
    }

    /// Writes `<dir>/<scenario>.json` and returns its path.
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}
