//! Accepting a message: check it, deduplicate it, give it an id, publish it.
//!
//! A resend of a `client_msg_id` is answered as the first message only if it
//! *is* the first message: the dedup record keeps a fingerprint of the kind
//! (direct or group), the recipient or group and the body, and a resend whose
//! fingerprint differs is refused with `RESEND_MISMATCH`, publishing nothing.
//! One server message id therefore names exactly one message.
//!
//! Why publishing happens again on an exact resend: the dedup record is
//! written before the broker has the message, so a crash between the two
//! would leave a record for a message that was never published. Re-publishing
//! the same message (same id, timestamp, conversation and body) closes that
//! gap; msg_job stores by (conversation, server message id), so a second copy
//! in the broker never becomes a second copy in the store, and who may read a
//! group message is decided by membership in the store, not by the recipient
//! list that rides along for the push.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fishchat_codec::ErrorCode;
use fishchat_codec::pb::{SendToGroup, SendToUser};
use fishchat_rpc::events::{ChatEvent, chat_event::Conversation};

use fishchat_conversations::ConvKey;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use xxhash_rust::xxh3::Xxh3;

use crate::ports::{Accepted, Claim, Dedup, Directory, IdSource, Kind, Publisher, Refusal};

/// Size limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message body in bytes.
    pub max_body: usize,
    /// Longest client message id in bytes.
    pub max_client_msg_id: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024,
            max_client_msg_id: 64,
        }
    }
}

/// The send path, over its ports.
#[derive(Debug)]
pub struct Chat<D, U, I, P> {
    directory: D,
    dedup: U,
    ids: I,
    publisher: P,
    limits: Limits,
    outcomes: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// The two common outcomes, looked up once rather than per send.
    accepted: Counter,
    resent: Counter,
}

impl<D: Directory, U: Dedup, I: IdSource, P: Publisher> Chat<D, U, I, P> {
    /// Builds the send path.
    pub fn new(directory: D, dedup: U, ids: I, publisher: P, limits: Limits) -> Self {
        let outcomes = Family::<_, Counter>::default();
        let accepted = outcomes.get_or_create_owned(&vec![("outcome", "accepted")]);
        let resent = outcomes.get_or_create_owned(&vec![("outcome", "resend")]);
        Self {
            directory,
            dedup,
            ids,
            publisher,
            limits,
            outcomes,
            accepted,
            resent,
        }
    }

    /// Registers `sends` (by outcome: `accepted`, `resend` for a dedup hit
    /// answered with the first ack, or the refusal's error code).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "sends",
            "Sends by outcome: accepted, resend (a deduplicated resend) or the refusal's code",
            self.outcomes.clone(),
        );
    }

    fn count(&self, result: &Result<Accepted, Refusal>, resent: bool) {
        match result {
            Ok(_) if resent => self.resent.inc(),
            Ok(_) => self.accepted.inc(),
            Err(refusal) => self
                .outcomes
                .get_or_create(&vec![("outcome", refusal.code.as_str_name())])
                .inc(),
        };
    }

    /// Sends a batch: each send is checked, deduplicated (one dedup round
    /// trip for the whole batch) and published on its own; one result per
    /// send, in order. Publishing starts in batch order, and a conversation
    /// lives in one partition, so a connection's sends to one conversation
    /// keep their order.
    pub async fn send(&self, sends: &[Outgoing<'_>]) -> Vec<Result<Accepted, Refusal>> {
        let mut results: Vec<Option<Result<Accepted, Refusal>>> = vec![None; sends.len()];
        let mut resent = vec![false; sends.len()];
        let mut drafts = Vec::with_capacity(sends.len());
        for (i, send) in sends.iter().enumerate() {
            match self.draft(*send).await {
                Ok(draft) => drafts.push((i, draft)),
                Err(refusal) => results[i] = Some(Err(refusal)),
            }
        }
        let claims: Vec<Claim<'_>> = drafts
            .iter()
            .map(|(_, d)| Claim {
                sender: d.from,
                client_msg_id: d.client_msg_id,
                candidate: d.candidate,
            })
            .collect();
        let claimed = self.dedup.claim(&claims).await;
        let mut events = Vec::with_capacity(drafts.len());
        for ((i, draft), claimed) in drafts.into_iter().zip(claimed) {
            match claimed.and_then(|accepted| event(draft, accepted)) {
                Ok(publish) => events.push((i, publish)),
                Err(refusal) => results[i] = Some(Err(refusal)),
            }
        }
        let published = futures::future::join_all(
            events
                .iter()
                .map(|(_, p)| self.publisher.publish(p.kind, &p.key, &p.event)),
        )
        .await;
        for ((i, publish), outcome) in events.into_iter().zip(published) {
            tracing::debug!(
                from = publish.event.from_user_id,
                server_msg_id = publish.accepted.server_msg_id,
                resend = publish.resend,
                "message accepted"
            );
            resent[i] = publish.resend;
            results[i] = Some(outcome.map(|()| publish.accepted));
        }
        results
            .into_iter()
            .zip(resent)
            .map(|(r, resent)| {
                let result = r.unwrap_or_else(|| {
                    Err(Refusal::new(
                        ErrorCode::Internal,
                        "the dedup store lost a claim",
                    ))
                });
                self.count(&result, resent);
                result
            })
            .collect()
    }

    /// Checks one send and gives it an id: everything short of the dedup claim.
    async fn draft<'a>(&self, send: Outgoing<'a>) -> Result<Draft<'a>, Refusal> {
        let (from, client_msg_id, body) = match send {
            Outgoing::ToUser { from, message } => (from, &message.client_msg_id, &message.body),
            Outgoing::ToGroup { from, message } => (from, &message.client_msg_id, &message.body),
        };
        self.check(from, client_msg_id, body)?;
        let (conversation, key, recipients) = match send {
            Outgoing::ToUser { message, .. } => {
                let to = message.to_user_id;
                if to == 0 {
                    return Err(Refusal::new(ErrorCode::InvalidArgument, "to_user_id is 0"));
                }
                if !self.directory.user_exists(to).await? {
                    return Err(Refusal::new(
                        ErrorCode::UnknownUser,
                        format!("no user {to}"),
                    ));
                }
                let recipients = if from == to { vec![to] } else { vec![to, from] };
                (
                    Conversation::ToUserId(to),
                    ConvKey::direct(from, to),
                    recipients,
                )
            }
            Outgoing::ToGroup { message, .. } => {
                let group = message.group_id;
                let members = self.directory.group_members(group).await?;
                if !members.contains(&from) {
                    return Err(Refusal::new(
                        ErrorCode::NotGroupMember,
                        format!("user {from} is not a member of group {group}"),
                    ));
                }
                (Conversation::GroupId(group), ConvKey::Group(group), members)
            }
        };
        Ok(Draft {
            from,
            client_msg_id,
            body,
            conversation,
            key,
            recipients,
            candidate: Accepted {
                server_msg_id: self.ids.next_id().await?,
                timestamp_ms: now_ms(),
                fingerprint: fingerprint(conversation, body),
            },
        })
    }

    fn check(&self, from: u64, client_msg_id: &str, body: &Bytes) -> Result<(), Refusal> {
        if from == 0 {
            return Err(Refusal::new(ErrorCode::NotLoggedIn, "no sender"));
        }
        if client_msg_id.is_empty() || client_msg_id.len() > self.limits.max_client_msg_id {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!(
                    "client_msg_id must be 1 to {} bytes",
                    self.limits.max_client_msg_id
                ),
            ));
        }
        if body.is_empty() {
            return Err(Refusal::new(
                ErrorCode::EmptyBody,
                "the message body is empty",
            ));
        }
        if body.len() > self.limits.max_body {
            return Err(Refusal::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "the body has {} bytes; the limit is {}",
                    body.len(),
                    self.limits.max_body
                ),
            ));
        }
        Ok(())
    }
}

/// One send of a batch, by the authenticated user `from`.
#[derive(Debug, Clone, Copy)]
pub enum Outgoing<'a> {
    /// A direct message.
    ToUser {
        /// The sender.
        from: u64,
        /// The message.
        message: &'a SendToUser,
    },
    /// A group message.
    ToGroup {
        /// The sender.
        from: u64,
        /// The message.
        message: &'a SendToGroup,
    },
}

impl Outgoing<'_> {
    /// The client's id for the message.
    pub fn client_msg_id(&self) -> &str {
        match self {
            Self::ToUser { message, .. } => &message.client_msg_id,
            Self::ToGroup { message, .. } => &message.client_msg_id,
        }
    }
}

/// A checked message with its candidate id, before the dedup claim.
struct Draft<'a> {
    from: u64,
    client_msg_id: &'a str,
    body: &'a Bytes,
    conversation: Conversation,
    key: ConvKey,
    recipients: Vec<u64>,
    candidate: Accepted,
}

/// A claimed message on its way to the broker.
struct Publish {
    kind: Kind,
    key: String,
    event: ChatEvent,
    accepted: Accepted,
    resend: bool,
}

/// What to publish for `draft`, given what the dedup store recorded first.
fn event(draft: Draft<'_>, accepted: Accepted) -> Result<Publish, Refusal> {
    if accepted.fingerprint != draft.candidate.fingerprint {
        return Err(Refusal::new(
            ErrorCode::ResendMismatch,
            format!(
                "client_msg_id {:?} was first used for a message with another target or body",
                draft.client_msg_id
            ),
        ));
    }
    let resend = accepted != draft.candidate;
    let (kind, recipients) = match draft.conversation {
        // Today's members may include someone who joined after the first
        // send: a group resend is pushed to the sender's devices only. (If
        // the first send never reached the broker, the others see the
        // message at their next push's gap or sync.)
        Conversation::GroupId(_) if resend => (Kind::Group, vec![draft.from]),
        Conversation::GroupId(_) => (Kind::Group, draft.recipients),
        Conversation::ToUserId(_) => (Kind::Direct, draft.recipients),
    };
    Ok(Publish {
        kind,
        key: draft.key.to_string(),
        event: ChatEvent {
            server_msg_id: accepted.server_msg_id,
            from_user_id: draft.from,
            conversation: Some(draft.conversation),
            body: draft.body.clone(),
            timestamp_ms: accepted.timestamp_ms,
            client_msg_id: draft.client_msg_id.to_string(),
            recipients,
        },
        accepted,
        resend,
    })
}

/// What a resend must repeat: the kind, the recipient or group, the body.
/// xxh3 is stable across processes and builds, so every logic node agrees.
fn fingerprint(conversation: Conversation, body: &[u8]) -> u64 {
    let (kind, id) = match conversation {
        Conversation::ToUserId(user) => (b'u', user),
        Conversation::GroupId(group) => (b'g', group),
    };
    let mut hasher = Xxh3::new();
    hasher.update(&[kind]);
    hasher.update(&id.to_le_bytes());
    hasher.update(body);
    hasher.digest()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Fakes {
        users: Vec<u64>,
        groups: HashMap<u64, Vec<u64>>,
        dedup: Mutex<HashMap<(u64, String), Accepted>>,
        next: AtomicU64,
        published: Mutex<Vec<(Kind, String, ChatEvent)>>,
    }

    impl Directory for &Fakes {
        async fn user_exists(&self, user_id: u64) -> Result<bool, Refusal> {
            Ok(self.users.contains(&user_id))
        }
        async fn group_members(&self, group_id: u64) -> Result<Vec<u64>, Refusal> {
            self.groups
                .get(&group_id)
                .cloned()
                .ok_or_else(|| Refusal::new(ErrorCode::UnknownGroup, "no group"))
        }
    }

    impl Dedup for &Fakes {
        async fn claim(&self, claims: &[Claim<'_>]) -> Vec<Result<Accepted, Refusal>> {
            let mut dedup = self.dedup.lock();
            claims
                .iter()
                .map(|c| {
                    Ok(*dedup
                        .entry((c.sender, c.client_msg_id.to_string()))
                        .or_insert(c.candidate))
                })
                .collect()
        }
    }

    impl<D: Directory, U: Dedup, I: IdSource, P: Publisher> Chat<D, U, I, P> {
        async fn send_to_user(&self, from: u64, message: &SendToUser) -> Result<Accepted, Refusal> {
            let mut results = self.send(&[Outgoing::ToUser { from, message }]).await;
            results.remove(0)
        }

        async fn send_to_group(
            &self,
            from: u64,
            message: &SendToGroup,
        ) -> Result<Accepted, Refusal> {
            let mut results = self.send(&[Outgoing::ToGroup { from, message }]).await;
            results.remove(0)
        }
    }

    impl IdSource for &Fakes {
        async fn next_id(&self) -> Result<u64, Refusal> {
            Ok(self.next.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    impl Publisher for &Fakes {
        async fn publish(&self, kind: Kind, key: &str, e: &ChatEvent) -> Result<(), Refusal> {
            self.published
                .lock()
                .push((kind, key.to_owned(), e.clone()));
            Ok(())
        }
    }

    fn fakes() -> Fakes {
        Fakes {
            users: vec![1, 2, 3],
            groups: HashMap::from([(7, vec![1, 2, 3]), (8, vec![2, 3])]),
            ..Fakes::default()
        }
    }

    fn chat(f: &Fakes) -> Chat<&Fakes, &Fakes, &Fakes, &Fakes> {
        Chat::new(f, f, f, f, Limits::default())
    }

    fn to_user(cmid: &str, to: u64, body: &'static [u8]) -> SendToUser {
        SendToUser {
            client_msg_id: cmid.into(),
            to_user_id: to,
            body: Bytes::from_static(body),
        }
    }

    #[tokio::test]
    async fn a_direct_message_is_keyed_by_its_conversation_and_pushed_to_both_sides() {
        let f = fakes();
        let accepted = chat(&f)
            .send_to_user(1, &to_user("a", 2, b"hi"))
            .await
            .unwrap();
        let published = f.published.lock();
        let (kind, key, event) = &published[0];
        assert_eq!((*kind, key.as_str()), (Kind::Direct, "d:1:2"));
        assert_eq!(event.server_msg_id, accepted.server_msg_id);
        assert_eq!(event.from_user_id, 1);
        assert_eq!(event.recipients, vec![2, 1]);
    }

    #[tokio::test]
    async fn resend_returns_the_first_id_and_republishes_it() {
        let f = fakes();
        let c = chat(&f);
        let first = c.send_to_user(1, &to_user("a", 2, b"hi")).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                c.send_to_user(1, &to_user("a", 2, b"hi")).await.unwrap(),
                first
            );
        }
        let ids: Vec<u64> = f
            .published
            .lock()
            .iter()
            .map(|p| p.2.server_msg_id)
            .collect();
        assert_eq!(ids, vec![first.server_msg_id; 4]);
        // Another sender's identical client id is a different message.
        let other = c.send_to_user(3, &to_user("a", 2, b"hi")).await.unwrap();
        assert_ne!(other.server_msg_id, first.server_msg_id);
    }

    #[tokio::test]
    async fn a_resend_with_another_body_or_target_is_refused_and_publishes_nothing() {
        let f = fakes();
        let c = chat(&f);
        c.send_to_user(1, &to_user("a", 2, b"hi")).await.unwrap();
        let group = SendToGroup {
            client_msg_id: "a".into(),
            group_id: 7,
            body: Bytes::from_static(b"hi"),
        };
        let refusals = [
            c.send_to_user(1, &to_user("a", 2, b"changed")).await,
            c.send_to_user(1, &to_user("a", 3, b"hi")).await,
            c.send_to_group(1, &group).await,
        ];
        for refusal in refusals {
            assert_eq!(refusal.unwrap_err().code, ErrorCode::ResendMismatch);
        }
        let published = f.published.lock();
        assert_eq!(published.len(), 1, "only the first send was published");
        assert_eq!(published[0].2.body, Bytes::from_static(b"hi"));
    }

    #[tokio::test]
    async fn bad_sends_are_refused_and_publish_nothing() {
        let f = fakes();
        let c = chat(&f);
        let big: &'static [u8] = Box::leak(vec![1u8; 16 * 1024 + 1].into_boxed_slice());
        let cases = [
            (to_user("a", 99, b"hi"), ErrorCode::UnknownUser),
            (to_user("a", 2, b""), ErrorCode::EmptyBody),
            (to_user("a", 2, big), ErrorCode::BodyTooLarge),
            (to_user("", 2, b"hi"), ErrorCode::InvalidArgument),
            (to_user("a", 0, b"hi"), ErrorCode::InvalidArgument),
        ];
        for (msg, code) in cases {
            assert_eq!(c.send_to_user(1, &msg).await.unwrap_err().code, code);
        }
        assert_eq!(
            c.send_to_user(0, &to_user("a", 2, b"x"))
                .await
                .unwrap_err()
                .code,
            ErrorCode::NotLoggedIn
        );
        assert!(f.published.lock().is_empty());
    }

    #[tokio::test]
    async fn group_sends_need_membership_and_reach_every_member() {
        let f = fakes();
        let c = chat(&f);
        let msg = |group| SendToGroup {
            client_msg_id: "g".into(),
            group_id: group,
            body: Bytes::from_static(b"yo"),
        };
        assert_eq!(
            c.send_to_group(1, &msg(8)).await.unwrap_err().code,
            ErrorCode::NotGroupMember
        );
        assert_eq!(
            c.send_to_group(1, &msg(9)).await.unwrap_err().code,
            ErrorCode::UnknownGroup
        );
        assert!(f.published.lock().is_empty());
        c.send_to_group(1, &msg(7)).await.unwrap();
        let published = f.published.lock();
        assert_eq!(
            (published[0].0, published[0].1.as_str()),
            (Kind::Group, "g:7")
        );
        assert_eq!(published[0].2.recipients, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_batch_answers_each_send_in_order_and_publishes_in_order() {
        let f = fakes();
        let c = chat(&f);
        let first = to_user("a", 2, b"one");
        let unknown = to_user("b", 99, b"two");
        let again = to_user("a", 2, b"one");
        let changed = to_user("a", 2, b"three");
        let group = SendToGroup {
            client_msg_id: "c".into(),
            group_id: 7,
            body: Bytes::from_static(b"four"),
        };
        let results = c
            .send(&[
                Outgoing::ToUser {
                    from: 1,
                    message: &first,
                },
                Outgoing::ToUser {
                    from: 1,
                    message: &unknown,
                },
                Outgoing::ToUser {
                    from: 1,
                    message: &again,
                },
                Outgoing::ToUser {
                    from: 1,
                    message: &changed,
                },
                Outgoing::ToGroup {
                    from: 1,
                    message: &group,
                },
            ])
            .await;
        assert_eq!(results.len(), 5);
        let first_id = results[0].as_ref().unwrap().server_msg_id;
        assert_eq!(
            results[1].as_ref().unwrap_err().code,
            ErrorCode::UnknownUser
        );
        // A resend inside the same batch is answered as the first.
        assert_eq!(results[2].as_ref().unwrap(), results[0].as_ref().unwrap());
        assert_eq!(
            results[3].as_ref().unwrap_err().code,
            ErrorCode::ResendMismatch
        );
        let group_id = results[4].as_ref().unwrap().server_msg_id;
        let published: Vec<(u64, Bytes)> = f
            .published
            .lock()
            .iter()
            .map(|p| (p.2.server_msg_id, p.2.body.clone()))
            .collect();
        assert_eq!(
            published,
            vec![
                (first_id, Bytes::from_static(b"one")),
                (first_id, Bytes::from_static(b"one")),
                (group_id, Bytes::from_static(b"four")),
            ]
        );
    }
}
