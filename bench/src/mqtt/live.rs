//! Both MQTT scenarios against a real mosquitto, started on a free port by
//! `scripts/mosquitto.sh` (feature `mosquitto`: CI does not install it).

use std::path::Path;
use std::process::Command;

use super::{ConnectArgs, FanoutArgs, IdleArgs, run_fanout, run_idle};
use crate::report::Report;

/// A mosquitto of this test's own, stopped when dropped.
struct Broker {
    dir: tempfile::TempDir,
    port: u16,
    pid: u32,
}

impl Broker {
    fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let out = script("start", port, dir.path());
        let pid = out.trim().parse().expect("the script prints the pid");
        Broker { dir, port, pid }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        script("stop", self.port, self.dir.path());
    }
}

fn script(action: &str, port: u16, dir: &Path) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mosquitto.sh");
    let out = Command::new("bash")
        .arg(path)
        .arg(action)
        .arg(port.to_string())
        .arg(dir)
        .output()
        .expect("run scripts/mosquitto.sh");
    assert!(
        out.status.success(),
        "mosquitto.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn connect(broker: &Broker, connections: usize, prefix: &str) -> ConnectArgs {
    ConnectArgs {
        broker: ([127, 0, 0, 1], broker.port).into(),
        connections,
        rate: 2000.0,
        keepalive: 1,
        source_ip_count: Some(2),
        setup_timeout: 10.0,
        client_prefix: prefix.into(),
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

fn figure(report: &Report, name: &str) -> f64 {
    report
        .figures
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no figure {name:?} in {report:?}"))
        .value
}

#[tokio::test]
async fn idle_and_fanout_run_against_a_real_mosquitto() {
    let broker = Broker::start();

    let idle = run_idle(&IdleArgs {
        connect: connect(&broker, 200, "idle"),
        hold: 3.0,
        broker_pid: Some(broker.pid),
        settle: 1.0,
        samples: 2,
    })
    .await
    .expect("mqtt-idle");
    assert_eq!(figure(&idle, "subscribers connected+subscribed"), 200.0);
    assert_eq!(figure(&idle, "connections held at measurement"), 200.0);
    assert_eq!(figure(&idle, "held until close"), 200.0);
    assert!(figure(&idle, "broker VmRSS idle (median)") > 0.0);
    // A keepalive of 1 s over a 3 s hold: every subscriber pinged and was answered.
    assert!(figure(&idle, "pingresps received") >= 200.0);
    // Sampled once a second over a 3 s hold: a ramp and a memory point or more each second.
    let (names, ramp) = charts(&idle, "ramp");
    assert_eq!(names, ["latency-cdf", "ramp", "memory"]);
    assert!(ramp.len() == 1 && ramp[0] >= 3, "{ramp:?}");
    assert!(charts(&idle, "memory").1[0] >= 3);

    let fanout = run_fanout(&FanoutArgs {
        connect: connect(&broker, 50, "fanout"),
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
