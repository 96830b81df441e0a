//! The user's second device, connected for the whole run: a message is
//! PUSHed only once it is stored, so when this device has been pushed every
//! message of a round, the measuring device's reconnect will find them all.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::bail;
use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, interval_at, timeout_at};

use super::device::close;
use crate::chat::member::login_device;
use crate::idle::wire::{self, Dial, Failure, Wire};

/// The watching device's id.
const DEVICE_ID: &str = "bench-resync-watch";

/// What the device's task reports.
#[derive(Debug)]
enum Event {
    /// A PUSHed message's server_msg_id.
    Pushed(u64),
    /// Why the connection ended.
    Ended(String),
}

/// The watching device: its task reads the socket and pings; the driver
/// waits on what it reports.
#[derive(Debug)]
pub struct Watcher {
    events: mpsc::UnboundedReceiver<Event>,
    /// Every server_msg_id pushed so far.
    seen: HashSet<u64>,
    /// Dropped or fired: the task logs out and ends.
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Connects and logs in as the user's watching device.
    pub async fn start(dial: &Dial, index: usize, token: String) -> Result<Watcher, Failure> {
        let (wire, reply) = login_device(dial, index, token, DEVICE_ID).await?;
        let heartbeat = Duration::from_millis(u64::from(reply.heartbeat_interval_ms).max(1000));
        let (events, events_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(watch(wire, heartbeat, events, stop_rx));
        Ok(Watcher {
            events: events_rx,
            seen: HashSet::new(),
            stop,
            task,
        })
    }

    /// Waits until every message of `ids` has been pushed to the device, at
    /// most until `deadline`.
    pub async fn wait_for(&mut self, ids: &[u64], deadline: Instant) -> anyhow::Result<()> {
        let mut missing: HashSet<u64> = ids
            .iter()
            .copied()
            .filter(|id| !self.seen.contains(id))
            .collect();
        while !missing.is_empty() {
            match timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Pushed(id))) => {
                    self.seen.insert(id);
                    missing.remove(&id);
                }
                Ok(Some(Event::Ended(why))) => bail!("the user's watching device dropped: {why}"),
                Ok(None) => bail!("the user's watching device ended"),
                Err(_) => bail!(
                    "{} of {} messages were not pushed to the user's watching device in time \
                     (not stored?)",
                    missing.len(),
                    ids.len()
                ),
            }
        }
        Ok(())
    }

    /// Logs the device out and waits for its task.
    pub async fn close(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The device's task: reports every PUSHed message, pings at the heartbeat,
/// and logs out when told to stop (or the driver is gone).
async fn watch(
    mut wire: Wire,
    heartbeat: Duration,
    events: mpsc::UnboundedSender<Event>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
    let mut next_request: u32 = 1;
    let ended = loop {
        tokio::select! {
            _ = &mut stop => {
                close(wire).await;
                return;
            }
            _ = ping.tick() => {
                next_request = next_request.wrapping_add(1).max(2);
                if let Err(Failure(why)) = wire.send(Command::Ping, next_request, &pb::Ping::default()).await {
                    break why;
                }
            }
            frame = wire.recv() => match frame {
                Ok((_, Body::Push(push))) => {
                    for message in push.messages {
                        let _ = events.send(Event::Pushed(message.server_msg_id));
                    }
                }
                Ok((_, Body::Kick(kick))) => break format!("kicked: {}", wire::kick_name(kick.reason)),
                Ok(_) => {}
                Err(Failure(why)) => break why,
            },
        }
    };
    let _ = events.send(Event::Ended(ended));
}
