//! Both Centrifugo scenarios against a real Centrifugo, started on a free port
//! by `scripts/centrifugo.sh` (feature `centrifugo`: building it with `go
//! install` takes minutes, so CI does not).

use std::path::Path;

use super::{FanoutArgs, IdleArgs, ServerArgs, run_fanout, run_idle};
use crate::scripted::{Scripted, free_port};
use crate::subscribers::idle;
use crate::subscribers::testing::{assert_all_held, connect, figure};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/centrifugo.sh");

fn args(server: &Scripted<'_>) -> ServerArgs {
    ServerArgs {
        server: ([127, 0, 0, 1], server.port()).into(),
        api_key: "fishchat-bench".into(),
    }
}

#[tokio::test]
async fn idle_and_fanout_run_against_a_real_centrifugo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Scripted::start(Path::new(SCRIPT), free_port(), dir.path().to_owned())
        .expect("centrifugo starts");

    let idle = run_idle(&IdleArgs {
        server: args(&server),
        idle: idle::IdleArgs {
            connect: connect(200, "idle"),
            hold: 3.0,
            broker_pid: Some(server.pid),
            settle: 1.0,
            samples: 2,
        },
    })
    .await
    .expect("centrifugo-idle");
    assert_all_held(&idle, 200.0);

    let fanout = run_fanout(&FanoutArgs {
        server: args(&server),
        connect: connect(50, "fanout"),
        messages: 1000,
        batch: 20,
        window: 200,
        server_pid: Some(server.pid),
    })
    .await
    .expect("centrifugo-fanout");
    assert_eq!(figure(&fanout, "messages published"), 1000.0);
    assert_eq!(figure(&fanout, "messages delivered"), 1000.0);
    assert!(figure(&fanout, "deliveries per second") > 0.0);
    assert!(figure(&fanout, "server CPU per delivery") > 0.0);
}
