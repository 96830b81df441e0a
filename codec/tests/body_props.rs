//! Property tests of the conversation bodies: any value of each survives a
//! frame unchanged and re-encodes to the very bytes it came in, which is what
//! the access tier's canonical-body check expects of every valid body.

use bytes::{Bytes, BytesMut};
use fishchat_codec::pb::{self, conversation_ref::Id, stored_message::Conversation};
use fishchat_codec::{Body, FrameDecoder};
use proptest::prelude::*;

const MAX: u32 = 1 << 20;

fn conversation_ref() -> impl Strategy<Value = Option<pb::ConversationRef>> {
    let id = prop_oneof![
        any::<u64>().prop_map(Id::UserId),
        any::<u64>().prop_map(Id::GroupId),
    ];
    // An empty ref (no id) is a valid encoding too; the server refuses it, the codec must not.
    proptest::option::of(proptest::option::of(id).prop_map(|id| pb::ConversationRef { id }))
}

fn stored_message() -> impl Strategy<Value = pb::StoredMessage> {
    let conversation = proptest::option::of(prop_oneof![
        any::<u64>().prop_map(Conversation::ToUserId),
        any::<u64>().prop_map(Conversation::GroupId),
    ]);
    (
        (any::<u64>(), any::<u64>(), any::<u64>()),
        conversation,
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<i64>(),
        "\\PC{0,12}",
    )
        .prop_map(
            |(
                (seq, server_msg_id, from_user_id),
                conversation,
                body,
                timestamp_ms,
                client_msg_id,
            )| {
                pb::StoredMessage {
                    seq,
                    server_msg_id,
                    from_user_id,
                    conversation,
                    body: Bytes::from(body),
                    timestamp_ms,
                    client_msg_id,
                }
            },
        )
}

fn messages() -> impl Strategy<Value = Vec<pb::StoredMessage>> {
    proptest::collection::vec(stored_message(), 0..4)
}

fn known() -> impl Strategy<Value = pb::KnownConversation> {
    (conversation_ref(), any::<u64>(), any::<u64>()).prop_map(|(conversation, seq, read_seq)| {
        pb::KnownConversation {
            conversation,
            seq,
            read_seq,
        }
    })
}

fn summary() -> impl Strategy<Value = pb::ConversationSummary> {
    (
        conversation_ref(),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        messages(),
        any::<bool>(),
    )
        .prop_map(
            |(conversation, (head_seq, read_seq, unread, first_seq), messages, has_gap)| {
                pb::ConversationSummary {
                    conversation,
                    head_seq,
                    read_seq,
                    unread,
                    messages,
                    has_gap,
                    first_seq,
                }
            },
        )
}

/// Any body of a command that names or carries conversations.
fn conversation_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        messages().prop_map(|messages| pb::Push { messages }.into()),
        (
            proptest::collection::vec(known(), 0..4),
            any::<u32>(),
            any::<u32>(),
            conversation_ref()
        )
            .prop_map(
                |(known, newest, limit, after)| pb::SyncConversationsRequest {
                    known,
                    newest,
                    limit,
                    after,
                }
                .into()
            ),
        (proptest::collection::vec(summary(), 0..3), any::<bool>()).prop_map(
            |(conversations, has_more)| pb::SyncConversationsReply {
                conversations,
                has_more,
            }
            .into()
        ),
        (conversation_ref(), any::<u64>(), any::<u32>()).prop_map(
            |(conversation, after_seq, limit)| pb::SyncRequest {
                after_seq,
                limit,
                conversation,
            }
            .into()
        ),
        (messages(), any::<bool>()).prop_map(|(messages, has_more)| pb::SyncReply {
            messages,
            has_more
        }
        .into()),
        (conversation_ref(), any::<u64>(), any::<u32>()).prop_map(
            |(conversation, before_seq, limit)| pb::HistoryRequest {
                conversation,
                before_seq,
                limit,
            }
            .into()
        ),
        (messages(), any::<bool>()).prop_map(|(messages, has_more)| pb::HistoryReply {
            messages,
            has_more
        }
        .into()),
        (conversation_ref(), any::<u64>()).prop_map(|(conversation, seq)| pb::ReadRequest {
            conversation,
            seq
        }
        .into()),
        (any::<u64>(), any::<u64>()).prop_map(|(read_seq, unread)| pb::ReadReply {
            read_seq,
            unread
        }
        .into()),
        (conversation_ref(), any::<u64>(), any::<u64>()).prop_map(
            |(conversation, reader_user_id, read_seq)| pb::ReadUpdate {
                conversation,
                reader_user_id,
                read_seq,
            }
            .into()
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn conversation_bodies_survive_a_frame_byte_for_byte(
        body in conversation_body(),
        request_id in any::<u32>(),
    ) {
        let mut wire = BytesMut::new();
        body.encode(request_id, MAX, &mut wire).unwrap();
        let sent = wire.clone().freeze();
        let frame = FrameDecoder::new(MAX).decode(&mut wire).unwrap().unwrap();
        prop_assert!(wire.is_empty());
        prop_assert_eq!(frame.header.command, body.command());
        prop_assert_eq!(frame.header.request_id, request_id);
        let decoded = frame.body().unwrap();
        prop_assert_eq!(&decoded, &body);

        let mut again = BytesMut::new();
        decoded.encode(request_id, MAX, &mut again).unwrap();
        prop_assert_eq!(again.freeze(), sent);
    }
}
