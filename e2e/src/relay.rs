//! A TCP relay between a service and a real server that a test can cut and
//! restore, to take a server away from one service without stopping it for
//! every other test.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Relays every connection made to [`addr`](Self::addr) to the target while up.
pub struct Relay {
    addr: SocketAddr,
    target: String,
    /// The accept loop and every relayed connection; dropped on a cut.
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    /// Relays a free local port to `target` (`host:port`).
    pub async fn start(target: &str) -> Relay {
        let port = crate::services::free_port();
        let mut relay = Relay {
            addr: ([127, 0, 0, 1], port).into(),
            target: target.to_owned(),
            tasks: None,
        };
        relay.restore().await;
        relay
    }

    /// The address services should connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones, as a server that
    /// went away would.
    pub fn cut(&mut self) {
        self.tasks = None;
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|err| panic!("relay cannot listen on {}: {err}", self.addr));
        let target = self.target.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Connections live in their own set, dropped (closed) with this task.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }
}
