//! The peers' messages to the user, each sent as a client sends it: connect,
//! LOGIN, SEND_TO_USER, wait for the SEND_ACK, log out. Through access and
//! the whole pipeline, so each is stored where the user's sync finds it.

use std::time::Duration;

use anyhow::anyhow;
use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};
use futures::{StreamExt, TryStreamExt, stream};
use tokio::time::timeout;

use super::device::close;
use crate::chat::conversation::Conversation;
use crate::chat::member::login_device;
use crate::idle::wire::{self, Dial, Failure};
use crate::push::clock;

/// The peers' device id.
const DEVICE_ID: &str = "bench-resync-peer";
/// Peers sending at once.
const CONCURRENCY: usize = 64;
/// Longest one peer's connect, login, send and ack may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of each message body (a send-time stamp and padding).
const BODY_BYTES: usize = 16;
/// The request id of the SEND (1 is the LOGIN).
const SEND_REQUEST: u32 = 2;

/// One peer of the user.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its connection index in the dial.
    pub index: usize,
    /// Its user id.
    pub user_id: u64,
    /// Its login token.
    pub token: String,
}

/// Where the messages go, and what makes their client_msg_ids unique.
#[derive(Debug, Clone, Copy)]
pub struct To {
    /// The user they are sent to.
    pub user_id: u64,
    /// This run's nonce.
    pub nonce: u64,
    /// The round (0 for the setup's messages).
    pub round: usize,
}

/// Sends one message from each of `peers` to the user; returns each one's
/// conversation (as the user sees it) and server_msg_id, or the first failure.
pub async fn send_all(
    dial: &Dial,
    peers: &[&Peer],
    to: To,
) -> anyhow::Result<Vec<(Conversation, u64)>> {
    stream::iter(peers.iter().copied())
        .map(|peer| async move {
            let sent = timeout(SEND_TIMEOUT, send(dial, peer, to)).await;
            match sent {
                Ok(Ok(id)) => Ok((Conversation::User(peer.user_id), id)),
                Ok(Err(Failure(why))) => Err(anyhow!("peer {} sending: {why}", peer.user_id)),
                Err(_) => Err(anyhow!("peer {} sending: timeout", peer.user_id)),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

/// One message from `peer`: its server_msg_id once acked.
async fn send(dial: &Dial, peer: &Peer, to: To) -> Result<u64, Failure> {
    let (mut wire, _) = login_device(dial, peer.index, peer.token.clone(), DEVICE_ID).await?;
    let request = pb::SendToUser {
        client_msg_id: format!("resync-{}-{}-{}", to.nonce, to.round, peer.index),
        to_user_id: to.user_id,
        body: clock::stamped(clock::now_us(), BODY_BYTES),
    };
    wire.send(Command::SendToUser, SEND_REQUEST, &request)
        .await?;
    let acked = loop {
        match wire.recv().await? {
            (SEND_REQUEST, Body::SendAck(ack)) => match ack.error {
                Some(err) => break Err(refused(err.code)),
                None => break Ok(ack.server_msg_id),
            },
            (SEND_REQUEST, Body::Error(err)) => break Err(refused(err.code)),
            (_, Body::Kick(kick)) => {
                break Err(Failure(format!("kicked: {}", wire::kick_name(kick.reason))));
            }
            // Its own message pushed back, a PONG: not what it waits for.
            _ => {}
        }
    };
    close(wire).await;
    acked
}

fn refused(code: i32) -> Failure {
    Failure(format!("SEND_TO_USER refused: {}", wire::code_name(code)))
}
