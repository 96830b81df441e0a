//! History and read requests of the application, and read positions moved
//! elsewhere (READ_UPDATE). Both requests are safe to repeat, so one cut off
//! by a lost connection simply goes again on the next.

use fishchat_codec::Body;
use fishchat_codec::pb;

use super::session::Session;
use super::{Driver, End, InFlight, Reply};
use crate::conversation::Conversation;
use crate::error::ClientError;
use crate::event::Event;

/// History and read requests on the wire at once.
const MAX_REQUESTS_IN_FLIGHT: usize = 4;

/// A history or read request of the application.
pub(crate) enum AppRequest {
    History {
        request: pb::HistoryRequest,
        reply: Reply<pb::HistoryReply>,
    },
    Read {
        conversation: Conversation,
        seq: u64,
        reply: Reply<pb::ReadReply>,
    },
}

impl AppRequest {
    fn body(&self) -> Body {
        match self {
            AppRequest::History { request, .. } => (*request).into(),
            AppRequest::Read {
                conversation, seq, ..
            } => pb::ReadRequest {
                conversation: Some((*conversation).into()),
                seq: *seq,
            }
            .into(),
        }
    }

    /// The caller gave up waiting.
    fn abandoned(&self) -> bool {
        match self {
            AppRequest::History { reply, .. } => reply.is_closed(),
            AppRequest::Read { reply, .. } => reply.is_closed(),
        }
    }

    /// Answers the request with `error`.
    pub(super) fn fail(self, error: ClientError) {
        match self {
            AppRequest::History { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            AppRequest::Read { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Driver {
    /// Writes waiting requests while there is room.
    pub(super) async fn flush_requests(&mut self, s: &mut Session) -> Result<(), End> {
        while s.requests_in_flight() < MAX_REQUESTS_IN_FLIGHT {
            let Some(request) = self.requests.pop_front() else {
                break;
            };
            if request.abandoned() {
                continue;
            }
            let id = s.next_id();
            if let Err(end) = s.write(id, &request.body()).await {
                self.requests.push_front(request);
                return Err(end);
            }
            s.pending.insert(id, InFlight::App(request));
        }
        Ok(())
    }

    /// Answers a read request and records the position it reached.
    pub(super) fn on_read_reply(
        &mut self,
        conversation: Conversation,
        read: pb::ReadReply,
        reply: Reply<pb::ReadReply>,
    ) {
        if self.shared.table().read_to(conversation, read.read_seq) {
            self.shared.touch();
        }
        let _ = reply.send(Ok(read));
    }

    /// A read position moved: this user's on another device, or the peer's (a receipt).
    pub(super) fn on_read_update(&mut self, update: pb::ReadUpdate) {
        let Some(conversation) = update
            .conversation
            .as_ref()
            .and_then(|c| Conversation::try_from(c).ok())
        else {
            tracing::warn!("a READ_UPDATE names no conversation; ignored");
            return;
        };
        if update.reader_user_id != self.user_id {
            self.emit(Event::ReadReceipt {
                conversation,
                reader_user_id: update.reader_user_id,
                read_seq: update.read_seq,
            });
            return;
        }
        let moved = self.shared.table().read_to(conversation, update.read_seq);
        if !moved {
            return;
        }
        self.shared.touch();
        let unread = self
            .shared
            .table()
            .info(conversation)
            .map_or(0, |info| info.unread);
        self.emit(Event::Read {
            conversation,
            read_seq: update.read_seq,
            unread,
        });
    }
}
