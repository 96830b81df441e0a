//! The gRPC service through a real tonic server on an ephemeral port.

mod common;

use common::{LONG_TTL, test_env};
use fishchat_codec::ErrorCode;
use fishchat_register::rpc::RegisterRpc;
use fishchat_rpc::register as pb;
use fishchat_rpc::register::register_client::RegisterClient;
use fishchat_rpc::status::error_code;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::server::TcpIncoming;

#[tokio::test]
async fn create_login_verify_revoke_sessions_groups() {
    let env = test_env("grpc", LONG_TTL).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegisterRpc::server(env.registry.clone()))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let mut client = RegisterClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let alice = client
        .create_user(pb::CreateUserRequest {
            name: "alice".into(),
            password: "pw".into(),
        })
        .await
        .expect("CreateUser")
        .into_inner()
        .user_id;
    let dup = client
        .create_user(pb::CreateUserRequest {
            name: "alice".into(),
            password: "pw".into(),
        })
        .await
        .expect_err("a taken name");
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");
    assert_eq!(error_code(&dup), ErrorCode::InvalidArgument);
    let empty = client
        .create_user(pb::CreateUserRequest {
            name: String::new(),
            password: "pw".into(),
        })
        .await
        .expect_err("an empty name");
    assert_eq!(empty.code(), Code::InvalidArgument);

    let wrong = client
        .login(pb::LoginRequest {
            name: "alice".into(),
            password: "nope".into(),
        })
        .await
        .expect_err("a wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let login = client
        .login(pb::LoginRequest {
            name: "alice".into(),
            password: "pw".into(),
        })
        .await
        .expect("Login")
        .into_inner();
    assert_eq!(login.user_id, alice);

    let verified = client
        .verify_token(pb::VerifyTokenRequest {
            token: login.token.clone(),
        })
        .await
        .expect("VerifyToken")
        .into_inner();
    assert_eq!(verified.user_id, alice);
    assert_eq!(verified.expires_at_ms, login.expires_at_ms);
    client
        .revoke_token(pb::RevokeTokenRequest {
            token: login.token.clone(),
        })
        .await
        .expect("RevokeToken");
    let revoked = client
        .verify_token(pb::VerifyTokenRequest { token: login.token })
        .await
        .expect_err("a revoked token");
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert_eq!(error_code(&revoked), ErrorCode::BadToken);

    let user = client
        .get_user(pb::GetUserRequest { user_id: alice })
        .await
        .expect("GetUser")
        .into_inner();
    assert_eq!(user.name, "alice");
    let unknown = client
        .get_user(pb::GetUserRequest {
            user_id: alice + 1000,
        })
        .await
        .expect_err("an unknown user");
    assert_eq!(error_code(&unknown), ErrorCode::UnknownUser);

    let first = pb::Session {
        user_id: alice,
        device_id: "phone".into(),
        access_node_id: "access-a".into(),
        push_addr: "127.0.0.1:7001".into(),
        conn_id: 1,
    };
    let reply = client
        .record_session(first.clone())
        .await
        .expect("RecordSession")
        .into_inner();
    assert_eq!(reply.replaced, None);
    let second = pb::Session {
        conn_id: 2,
        ..first.clone()
    };
    let reply = client
        .record_session(second.clone())
        .await
        .expect("RecordSession")
        .into_inner();
    assert_eq!(reply.replaced, Some(first));
    let listed = client
        .list_sessions(pb::ListSessionsRequest {
            user_ids: vec![alice],
        })
        .await
        .expect("ListSessions")
        .into_inner();
    assert_eq!(listed.sessions, [second]);
    let removed = client
        .remove_session(pb::RemoveSessionRequest {
            user_id: alice,
            device_id: "phone".into(),
            access_node_id: "access-a".into(),
            conn_id: 2,
        })
        .await
        .expect("RemoveSession")
        .into_inner();
    assert!(removed.removed);

    let group = client
        .create_group(pb::CreateGroupRequest {
            owner_id: alice,
            name: "friends".into(),
            open: false,
        })
        .await
        .expect("CreateGroup")
        .into_inner();
    assert!(!group.open);
    let members = client
        .group_members(pb::GroupMembersRequest {
            group_id: group.group_id,
        })
        .await
        .expect("GroupMembers")
        .into_inner();
    assert_eq!(members.user_ids, [alice]);
    let unknown_group = client
        .join_group(pb::GroupMemberRequest {
            group_id: group.group_id + 1000,
            user_id: alice,
        })
        .await
        .expect_err("an unknown group");
    assert_eq!(unknown_group.code(), Code::NotFound);
    assert_eq!(error_code(&unknown_group), ErrorCode::UnknownGroup);
    // JoinGroup and QuitGroup act as the user they name, under the same rules.
    let bob = client
        .create_user(pb::CreateUserRequest {
            name: "bob".into(),
            password: "pw".into(),
        })
        .await
        .expect("CreateUser")
        .into_inner()
        .user_id;
    let bob_joins = pb::GroupMemberRequest {
        group_id: group.group_id,
        user_id: bob,
    };
    let asked = client
        .join_group(bob_joins)
        .await
        .expect("JoinGroup")
        .into_inner();
    assert_eq!(
        asked,
        pb::GroupMemberReply {
            changed: true,
            pending: true
        },
        "a closed group takes a join request"
    );
    let members = client
        .group_members(pb::GroupMembersRequest {
            group_id: group.group_id,
        })
        .await
        .expect("GroupMembers")
        .into_inner();
    assert_eq!(members.user_ids, [alice]);
    let open = client
        .create_group(pb::CreateGroupRequest {
            owner_id: alice,
            name: "open".into(),
            open: true,
        })
        .await
        .expect("CreateGroup")
        .into_inner();
    let bob_joins_open = pb::GroupMemberRequest {
        group_id: open.group_id,
        user_id: bob,
    };
    let joined = client
        .join_group(bob_joins_open)
        .await
        .expect("JoinGroup")
        .into_inner();
    assert_eq!(
        joined,
        pb::GroupMemberReply {
            changed: true,
            pending: false
        }
    );
    let left = client
        .quit_group(bob_joins_open)
        .await
        .expect("QuitGroup")
        .into_inner();
    assert!(left.changed);
    let owner_quits = client
        .quit_group(pb::GroupMemberRequest {
            group_id: open.group_id,
            user_id: alice,
        })
        .await
        .expect_err("the owner cannot leave");
    assert_eq!(
        owner_quits.code(),
        Code::FailedPrecondition,
        "{owner_quits:?}"
    );

    let groups = client
        .user_groups(pb::UserGroupsRequest { user_id: alice })
        .await
        .expect("UserGroups")
        .into_inner();
    assert_eq!(groups.groups, [group, open]);

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    env.cleanup().await;
}
