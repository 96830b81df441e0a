//! Both MQTT scenarios against a real mosquitto, started on a free port by
//! `scripts/mosquitto.sh` (feature `mosquitto`: CI does not install it).

use std::path::Path;

use super::{FanoutArgs, IdleArgs, MqttArgs, run_fanout, run_idle};
use crate::report::Report;
use crate::scripted::{Scripted, free_port};
use crate::subscribers::idle;
use crate::subscribers::testing::{assert_all_held, connect, figure};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mosquitto.sh");

fn mqtt(broker: &Scripted<'_>) -> MqttArgs {
    MqttArgs {
        broker: ([127, 0, 0, 1], broker.port()).into(),
        keepalive: 1,
    }
}

/// The names of the report's charts, and the points of each series of the named one.
fn charts(report: &Report, name: &str) -> (Vec<String>, Vec<usize>) {
    let names = report.charts.iter().map(|c| c.name.clone()).collect();
    let points = report
        .charts
        .iter()
        .filter(|c| c.name == name)
        .flat_map(|c| c.series.iter().map(|s| s.points.len()))
        .collect();
    (names, points)
}

#[tokio::test]
async fn idle_and_fanout_run_against_a_real_mosquitto() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Scripted::start(Path::new(SCRIPT), free_port(), dir.path().to_owned())
        .expect("mosquitto starts");

    let idle = run_idle(&IdleArgs {
        mqtt: mqtt(&broker),
        idle: idle::IdleArgs {
            connect: connect(200, "idle"),
            hold: 3.0,
            broker_pid: Some(broker.pid),
            settle: 1.0,
            samples: 2,
        },
    })
    .await
    .expect("mqtt-idle");
    assert_all_held(&idle, 200.0);
    // A keepalive of 1 s over a 3 s hold: every subscriber pinged and was answered.
    assert!(figure(&idle, "keepalives answered") >= 200.0);
    // Sampled once a second over a 3 s hold: a ramp and a memory point or more each second.
    let (names, ramp) = charts(&idle, "ramp");
    assert_eq!(names, ["latency-cdf", "ramp", "memory"]);
    assert!(ramp.len() == 1 && ramp[0] >= 3, "{ramp:?}");
    assert!(charts(&idle, "memory").1[0] >= 3);

    let fanout = run_fanout(&FanoutArgs {
        mqtt: mqtt(&broker),
        connect: connect(50, "fanout"),
        messages: 1000,
        publish_rate: 0.0,
        window: 200,
        payload_bytes: 16,
    })
    .await
    .expect("mqtt-fanout");
    assert_eq!(figure(&fanout, "messages published"), 1000.0);
    assert_eq!(figure(&fanout, "messages delivered"), 1000.0);
    assert!(figure(&fanout, "deliveries per second") > 0.0);
    assert!(figure(&fanout, "delivery latency max") > 0.0);
    let (names, cdf) = charts(&fanout, "latency-cdf");
    assert_eq!(names, ["latency-cdf", "throughput"]);
    assert!(cdf.len() == 1 && cdf[0] > 1, "{cdf:?}");
}
