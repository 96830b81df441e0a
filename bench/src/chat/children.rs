//! Worker processes of this program: each started as `<this program>
//! <hidden subcommand> <flags>`, told things on its stdin, heard on its
//! stdout one JSON line at a time. Nothing here knows a scenario: the chat
//! scenarios and the idle scenario use it, and any other scenario with
//! workers can.

use std::ffi::OsString;
use std::process::Stdio;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// What the parent hears from worker `k`.
#[derive(Debug)]
pub enum Heard<E> {
    /// One line it printed, decoded.
    Event(usize, E),
    /// Its stdout closed: it exited (or is about to).
    Exited(usize),
}

/// Starts worker `k` as `<this program> <args>`, killed if its handle is
/// dropped; every JSON line it prints arrives on `heard` as an event (other
/// lines go to stderr), then its exit.
pub fn spawn<E: DeserializeOwned + Send + 'static>(
    k: usize,
    args: Vec<OsString>,
    heard: mpsc::UnboundedSender<Heard<E>>,
) -> anyhow::Result<(Child, ChildStdin)> {
    let exe = std::env::current_exe().context("this program's path")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start worker {k}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("worker {k}'s pipes are missing");
    };
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str(&line) {
                Ok(event) => {
                    let _ = heard.send(Heard::Event(k, event));
                }
                Err(_) => eprintln!("worker {k}: {line}"),
            }
        }
        let _ = heard.send(Heard::Exited(k));
    });
    Ok((child, stdin))
}
