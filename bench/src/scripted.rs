//! A private server (Mosquitto, Centrifugo) started by its bench script
//! (`scripts/<server>.sh start PORT DIR` prints its pid; `stop PORT DIR`
//! stops it), stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A server the script started.
pub struct Scripted<'a> {
    script: &'a Path,
    port: u16,
    dir: PathBuf,
    /// The server's pid, for its memory and CPU.
    pub pid: u32,
}

impl<'a> Scripted<'a> {
    /// Starts the server on 127.0.0.1:`port` with its files in `dir`.
    pub fn start(script: &'a Path, port: u16, dir: PathBuf) -> anyhow::Result<Scripted<'a>> {
        let out = Command::new("bash")
            .arg(script)
            .args(["start", &port.to_string()])
            .arg(&dir)
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("{} printed no pid", script.display()))?;
        Ok(Scripted {
            script,
            port,
            dir,
            pid,
        })
    }
}

impl Drop for Scripted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.script)
            .args(["stop", &self.port.to_string()])
            .arg(&self.dir)
            .output();
    }
}

#[cfg(all(test, any(feature = "mosquitto", feature = "centrifugo")))]
impl Scripted<'_> {
    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A port free at the time of asking, for a server of a test's own.
#[cfg(all(test, any(feature = "mosquitto", feature = "centrifugo")))]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
