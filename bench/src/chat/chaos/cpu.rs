//! CPU seconds per process across restarts. A killed service comes back
//! under a new pid, so `--cpu NAME=PID` would lose it: the campaign reads
//! the pid files instead (deploy.sh's and scripts/stack's) at every sample
//! and adds up the CPU of each pid a name had. A process's CPU after its
//! last sample before a kill -9 is not seen; the sampling runs once a second
//! and right before each fault, so at most a second of it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::procstat::tree_cpu_secs;

/// One pid of a name: its CPU at the first and at the latest sample.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Life {
    pid: u32,
    first: f64,
    last: f64,
}

/// The CPU book of every `*.pid` file in some folders, named by file stem.
#[derive(Debug, Default)]
pub struct CpuBook {
    dirs: Vec<PathBuf>,
    current: BTreeMap<String, Life>,
    /// CPU of the pids a name had before its current one.
    finished: BTreeMap<String, f64>,
}

impl CpuBook {
    /// A book of the pid files in `dirs`; the first sample is the baseline.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        let mut book = CpuBook {
            dirs,
            ..CpuBook::default()
        };
        let baseline = book.read();
        for (name, pid, cpu) in baseline {
            book.current.insert(
                name,
                Life {
                    pid,
                    first: cpu,
                    last: cpu,
                },
            );
        }
        book
    }

    /// Every pid file's (name, pid, CPU seconds) whose process is alive.
    fn read(&self) -> Vec<(String, u32, f64)> {
        let mut found = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "pid") {
                    continue;
                }
                let (Some(name), Ok(text)) = (
                    path.file_stem().and_then(|s| s.to_str()),
                    std::fs::read_to_string(&path),
                ) else {
                    continue;
                };
                let Ok(pid) = text.trim().parse::<u32>() else {
                    continue;
                };
                if let Some(cpu) = tree_cpu_secs(pid) {
                    found.push((name.to_owned(), pid, cpu));
                }
            }
        }
        found
    }

    /// Reads every process now.
    pub fn sample(&mut self) {
        for (name, pid, cpu) in self.read() {
            self.record(name, pid, cpu);
        }
    }

    /// One reading: the same pid moves on; a new pid closes the old one's
    /// account and, started during the run, counts from zero.
    fn record(&mut self, name: String, pid: u32, cpu: f64) {
        match self.current.get_mut(&name) {
            Some(life) if life.pid == pid => life.last = cpu,
            Some(life) => {
                *self.finished.entry(name).or_default() += life.last - life.first;
                *life = Life {
                    pid,
                    first: 0.0,
                    last: cpu,
                };
            }
            None => {
                self.current.insert(
                    name,
                    Life {
                        pid,
                        first: 0.0,
                        last: cpu,
                    },
                );
            }
        }
    }

    /// CPU seconds per name since the book was made.
    pub fn totals(&self) -> BTreeMap<String, f64> {
        let mut totals = self.finished.clone();
        for (name, life) in &self.current {
            *totals.entry(name.clone()).or_default() += life.last - life.first;
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_process_adds_both_lives() {
        let mut book = CpuBook::default();
        book.current.insert(
            "logic".to_owned(),
            Life {
                pid: 10,
                first: 5.0,
                last: 5.0,
            },
        );
        book.record("logic".to_owned(), 10, 7.0);
        book.record("logic".to_owned(), 11, 0.5);
        book.record("logic".to_owned(), 11, 1.5);
        // A process first seen during the run counts from zero.
        book.record("gateway".to_owned(), 12, 0.25);
        let totals = book.totals();
        assert_eq!(totals["logic"], 2.0 + 1.5);
        assert_eq!(totals["gateway"], 0.25);
    }

    #[test]
    fn reads_pid_files_of_live_processes_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("me.pid"),
            format!("{}\n", std::process::id()),
        )
        .expect("write");
        std::fs::write(dir.path().join("junk.pid"), "not a pid").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "1").expect("write");
        let book = CpuBook::new(vec![dir.path().to_owned()]);
        let names: Vec<_> = book.totals().into_keys().collect();
        assert_eq!(names, ["me"]);
    }
}
