//! The baseline server as a child process of the bench, for scenarios that
//! compare against it in the same run.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::{Instant, sleep};

/// How long the started baseline has to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `tokio-server` started as a child process, killed when dropped.
pub struct Spawned {
    child: Child,
    /// Its client address.
    pub client: SocketAddr,
    /// Its Push gRPC address.
    pub push: SocketAddr,
}

impl Spawned {
    /// Starts `tokio-server` on 127.0.0.1:`port` (clients) and `port`+1
    /// (pushes) and waits until both accept.
    pub async fn start(port: u16) -> anyhow::Result<Spawned> {
        let client = SocketAddr::from(([127, 0, 0, 1], port));
        let push = SocketAddr::from(([127, 0, 0, 1], port.wrapping_add(1)));
        let child = Command::new(std::env::current_exe().context("this executable")?)
            .args(["tokio-server", "--listen", &client.to_string()])
            .args(["--push-listen", &push.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("start tokio-server")?;
        let spawned = Spawned {
            child,
            client,
            push,
        };
        let until = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(push).await.is_err()
            || tokio::net::TcpStream::connect(client).await.is_err()
        {
            if Instant::now() >= until {
                bail!(
                    "tokio-server did not listen on {client} and {push} within {START_TIMEOUT:?}"
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(spawned)
    }

    /// Its process id, for memory and CPU readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
