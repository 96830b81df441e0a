//! Resuming from the state file after a restart.

use super::*;

fn known(conversation: Conversation, seq: u64, read_seq: u64) -> pb::KnownConversation {
    pb::KnownConversation {
        conversation: Some(conversation.into()),
        seq,
        read_seq,
    }
}

#[tokio::test]
async fn a_restart_resumes_after_what_the_application_took() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = FakeServer::start().await;
    let mut opts = options(&server.addr);
    opts.state_file = Some(dir.path().join("state.json"));
    let group = Conversation::Group(5);

    let (client, mut events, mut conn) = connect_with(&mut server, opts.clone()).await;
    let changed = vec![
        summary(group, 2, 2, crate::testing::group_messages(5, 1..=2), false),
        summary(BOB, 3, 1, messages(1..=3), false),
    ];
    conn.list(changed, false).await;
    // The application takes the group's two and bob's 1 and 2, and stops there.
    for _ in 1..=2 {
        assert!(
            matches!(next_event(&mut events).await, Some(Event::Message { conversation, .. }) if conversation == group)
        );
    }
    assert_eq!(next_seq(&mut events).await, 1);
    assert_eq!(next_seq(&mut events).await, 2);
    let (closed, (_, logout)) = tokio::join!(client.close(), conn.recv());
    let () = closed;
    assert!(matches!(logout, Body::Logout(_)));

    // A new process: what was taken is known, what was not comes again.
    let (client, mut events, mut conn) = connect_with(&mut server, opts.clone()).await;
    let request = conn
        .list(vec![summary(BOB, 3, 1, messages(3..=3), false)], false)
        .await;
    assert_eq!(request.known, [known(BOB, 2, 1), known(group, 2, 2)]);
    assert_eq!(next_seq(&mut events).await, 3);
    expect_synced(&mut events).await;
    assert_eq!(client.conversation(BOB).map(|i| i.unread), Some(2));
    client.close().await;

    // Another device of the same user starts from scratch.
    opts.device_id = "other".into();
    let (_client, _events, mut conn) = connect_with(&mut server, opts).await;
    assert_eq!(conn.list(Vec::new(), false).await.known, []);
}
