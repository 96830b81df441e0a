//! Announcing this node under a kept-alive lease.
//!
//! The key lives only as long as its lease: a background task renews the lease
//! every third of the TTL, so a node that stops renewing (crash, kill -9,
//! dropped [`Registration`]) disappears from every resolver within the TTL. If
//! the lease is lost while the node lives (etcd restarted, the process was
//! paused longer than the TTL), the task grants a new one and puts the key
//! again, so the node comes back on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::backoff::Backoff;
use crate::error::DiscoveryError;
use crate::etcd::{bounded, connect};
use crate::node::NodeInfo;

/// The lease TTL used by [`Registration::start`]: a dead node is gone within 10 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// This node's entry in etcd, kept alive until dropped or deregistered.
///
/// Dropping it stops the renewals without removing the key, as a crash would:
/// the key vanishes after the TTL. Call [`deregister`](Self::deregister) on a
/// clean shutdown so callers stop using the node at once.
#[must_use = "dropping a Registration lets the node's key expire"]
pub struct Registration {
    client: Client,
    info: NodeInfo,
    load: watch::Sender<u64>,
    lease_id: Arc<AtomicI64>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Registers `info` under `/fishchat/<service>/<node_id>` with the default TTL.
    pub async fn start(endpoints: &[String], info: NodeInfo) -> Result<Self, DiscoveryError> {
        Self::start_with_ttl(endpoints, info, DEFAULT_TTL).await
    }

    /// Registers `info` with a lease of `ttl` (whole seconds, at least 1 s;
    /// etcd may raise very short TTLs to its own minimum).
    ///
    /// Fails if etcd does not accept the first registration; after that, lost
    /// leases are recovered in the background.
    pub async fn start_with_ttl(
        endpoints: &[String],
        info: NodeInfo,
        ttl: Duration,
    ) -> Result<Self, DiscoveryError> {
        let client = connect(endpoints).await?;
        let ttl = Duration::from_secs(ttl.as_secs().max(1));
        let (load, load_rx) = watch::channel(info.load);
        let lease_id = Arc::new(AtomicI64::new(0));
        let lease = Lease::establish(&client, &info, ttl, &lease_id).await?;
        tracing::info!(key = %info.key(), lease = lease.id, ttl_s = ttl.as_secs(), "registered in etcd");
        let keeper = Keeper {
            client: client.clone(),
            info: info.clone(),
            ttl,
            load: load_rx,
            lease_id: lease_id.clone(),
        };
        let task = tokio::spawn(keeper.run(lease));
        Ok(Self {
            client,
            info,
            load,
            lease_id,
            task,
        })
    }

    /// Publishes a new load. Cheap when unchanged; otherwise the background
    /// task re-puts the value under the same lease shortly after.
    pub fn set_load(&self, load: u64) {
        self.load.send_if_modified(|current| {
            let changed = *current != load;
            *current = load;
            changed
        });
    }

    /// What this node publishes, with its current load.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            load: *self.load.borrow(),
            ..self.info.clone()
        }
    }

    /// Removes the key at once by revoking the lease, and stops the renewals.
    pub async fn deregister(mut self) -> Result<(), DiscoveryError> {
        // Wait for the task to be gone so it cannot attach the key to a lease
        // granted after the id below is read.
        self.task.abort();
        let _ = (&mut self.task).await;
        let id = self.lease_id.load(Ordering::Acquire);
        let result = match bounded(self.client.lease_revoke(id)).await {
            Err(DiscoveryError::Etcd(etcd_client::Error::GRpcStatus(status)))
                if status.code() == tonic::Code::NotFound =>
            {
                // The lease already expired, and the key with it.
                Ok(())
            }
            other => other.map(drop),
        };
        tracing::info!(key = %self.info.key(), ok = result.is_ok(), "deregistered from etcd");
        result
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.info.key())
            .field("lease_id", &self.lease_id.load(Ordering::Relaxed))
            .field("load", &*self.load.borrow())
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One granted lease with its keep-alive stream.
struct Lease {
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// When etcd last confirmed the lease alive.
    last_ack: Instant,
}

impl Lease {
    /// Grants a lease, puts `info` under it and opens its keep-alive stream.
    ///
    /// The new lease id is stored in `current` before the key is attached to
    /// it, so a deregistration racing with this always revokes the lease that
    /// holds the key.
    async fn establish(
        client: &Client,
        info: &NodeInfo,
        ttl: Duration,
        current: &AtomicI64,
    ) -> Result<Self, DiscoveryError> {
        let mut client = client.clone();
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let id = bounded(client.lease_grant(ttl_secs, None)).await?.id();
        current.store(id, Ordering::Release);
        put(&mut client, info, id).await?;
        let (keeper, stream) = bounded(client.lease_keep_alive(id)).await?;
        Ok(Self {
            id,
            keeper,
            stream,
            last_ack: Instant::now(),
        })
    }
}

/// Writes `info` under its key, attached to lease `id`.
async fn put(client: &mut Client, info: &NodeInfo, id: i64) -> Result<(), DiscoveryError> {
    let value = serde_json::to_vec(info)?;
    bounded(client.put(info.key(), value, Some(PutOptions::new().with_lease(id)))).await?;
    Ok(())
}

/// The background task's state.
struct Keeper {
    client: Client,
    info: NodeInfo,
    ttl: Duration,
    load: watch::Receiver<u64>,
    lease_id: Arc<AtomicI64>,
}

impl Keeper {
    /// Renews `lease` until the [`Registration`] is gone, re-granting it whenever it is lost.
    async fn run(mut self, mut lease: Lease) {
        while let Some(lost) = self.keep(&mut lease).await {
            tracing::warn!(key = %self.info.key(), lease = lease.id, reason = %lost, "etcd lease lost; registering again");
            lease = self.recover().await;
        }
    }

    /// Renews `lease` and re-puts load changes; returns why the lease was
    /// lost, or `None` once the [`Registration`] is gone.
    async fn keep(&mut self, lease: &mut Lease) -> Option<String> {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if lease.last_ack.elapsed() >= self.ttl {
                        return Some(format!("no keep-alive answer within {:?}", self.ttl));
                    }
                    if let Err(err) = lease.keeper.keep_alive().await {
                        return Some(err.to_string());
                    }
                }
                answer = lease.stream.message() => match answer {
                    Ok(Some(resp)) if resp.ttl() > 0 => lease.last_ack = Instant::now(),
                    Ok(Some(_)) => return Some("lease expired".to_owned()),
                    Ok(None) => return Some("keep-alive stream closed".to_owned()),
                    Err(err) => return Some(err.to_string()),
                },
                changed = self.load.changed() => {
                    changed.ok()?;
                    self.info.load = *self.load.borrow_and_update();
                    if let Err(err) = put(&mut self.client, &self.info, lease.id).await {
                        // The value is put again with the current load when the lease is recovered.
                        tracing::warn!(key = %self.info.key(), %err, "cannot publish load");
                    }
                }
            }
        }
    }

    /// Grants a new lease and puts the key again, retrying with backoff until etcd accepts.
    async fn recover(&mut self) -> Lease {
        let mut backoff = Backoff::new(self.ttl.min(Duration::from_secs(5)));
        loop {
            self.info.load = *self.load.borrow_and_update();
            match Lease::establish(&self.client, &self.info, self.ttl, &self.lease_id).await {
                Ok(lease) => {
                    tracing::info!(key = %self.info.key(), lease = lease.id, "registered in etcd again");
                    return lease;
                }
                Err(err) => {
                    tracing::warn!(key = %self.info.key(), %err, "cannot register in etcd; retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}
