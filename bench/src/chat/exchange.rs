//! Requests a chat connection makes and waits for (SYNC_CONVERSATIONS and
//! SYNC, each through all its pages), while every other frame that arrives
//! meanwhile (PUSH, acks of sends in flight, PONG) still goes to the
//! connection's own handling.

use fishchat_codec::Body;
use fishchat_codec::pb::{self, Command};

use super::conversation::Conversation;
use crate::idle::wire::{self, Failure, Wire};

/// Messages asked for per SYNC page (the server may cap it lower).
const SYNC_LIMIT: u32 = 500;
/// Conversations asked for per SYNC_CONVERSATIONS page (the server's cap).
const CONVERSATIONS_LIMIT: u32 = 500;

/// The connection's side of an exchange: it numbers requests and takes the
/// frames that are not the awaited reply.
pub trait Side {
    /// A request id not in use on the connection (never 0: the server's own
    /// frames carry it).
    fn request_id(&mut self) -> u32;
    /// Takes a frame that is not the awaited reply; Err ends the exchange
    /// (the server is closing the connection).
    fn unsolicited(&mut self, request_id: u32, body: Body) -> Result<(), Failure>;
}

/// Sends `request` as `command` and returns the body of its reply.
async fn ask(
    wire: &mut Wire,
    side: &mut impl Side,
    command: Command,
    request: &impl prost::Message,
) -> Result<Body, Failure> {
    let id = side.request_id();
    wire.send(command, id, request).await?;
    loop {
        match wire.recv().await? {
            (got, Body::Error(err)) if got == id => {
                return Err(Failure(format!(
                    "{} refused: {}",
                    command.as_str_name(),
                    wire::code_name(err.code)
                )));
            }
            (got, body) if got == id => return Ok(body),
            (got, body) => side.unsolicited(got, body)?,
        }
    }
}

/// Every conversation SYNC_CONVERSATIONS reports against `known`, through all
/// its pages, each with at most `newest` of its newest messages (0: the
/// server's default).
pub async fn conversations(
    wire: &mut Wire,
    side: &mut impl Side,
    known: Vec<pb::KnownConversation>,
    newest: u32,
) -> Result<Vec<pb::ConversationSummary>, Failure> {
    conversations_paged(wire, side, known, newest, CONVERSATIONS_LIMIT).await
}

/// [`conversations`] with `limit` conversations asked for per page (0: the
/// server's default page size).
pub async fn conversations_paged(
    wire: &mut Wire,
    side: &mut impl Side,
    known: Vec<pb::KnownConversation>,
    newest: u32,
    limit: u32,
) -> Result<Vec<pb::ConversationSummary>, Failure> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let request = pb::SyncConversationsRequest {
            known: known.clone(),
            newest,
            limit,
            after,
        };
        let reply = match ask(wire, side, Command::SyncConversations, &request).await? {
            Body::SyncConversationsReply(reply) => reply,
            other => return Err(answered(Command::SyncConversations, &other)),
        };
        let last = reply.conversations.last().and_then(|c| c.conversation);
        all.extend(reply.conversations);
        // A page that names no last conversation cannot be followed.
        match last {
            Some(last) if reply.has_more => after = Some(last),
            _ => return Ok(all),
        }
    }
}

/// The messages of `conversation` after `after_seq`, ascending, through every
/// SYNC page.
pub async fn sync(
    wire: &mut Wire,
    side: &mut impl Side,
    conversation: Conversation,
    mut after_seq: u64,
) -> Result<Vec<pb::StoredMessage>, Failure> {
    let mut all = Vec::new();
    loop {
        let request = pb::SyncRequest {
            after_seq,
            limit: SYNC_LIMIT,
            conversation: Some(conversation.to_ref()),
        };
        let reply = match ask(wire, side, Command::Sync, &request).await? {
            Body::SyncReply(reply) => reply,
            other => return Err(answered(Command::Sync, &other)),
        };
        let top = reply.messages.iter().map(|m| m.seq).max().unwrap_or(0);
        all.extend(reply.messages);
        // A page that does not move past `after_seq` would be asked for forever.
        if !reply.has_more || top <= after_seq {
            return Ok(all);
        }
        after_seq = top;
    }
}

fn answered(command: Command, body: &Body) -> Failure {
    Failure(format!(
        "{} answered {}",
        command.as_str_name(),
        body.command().as_str_name()
    ))
}
