//! The access node's settings, from its TOML file, the environment
//! (`FISHCHAT_ACCESS_<KEY>`) and the command line.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of one access node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id in etcd and in session records; a unique one is made up when absent.
    pub node_id: Option<String>,
    /// Where clients connect (client protocol framing over TCP).
    pub client_listen: SocketAddr,
    /// The client address published in etcd for the gateway; empty means `client_listen`.
    pub client_advertise: String,
    /// A certificate chain (PEM) for TLS on the client port, with
    /// `client_tls_key`; empty means plain TCP. Every client must then speak TLS.
    pub client_tls_cert: String,
    /// The private key (PEM) of `client_tls_cert`; empty means plain TCP.
    pub client_tls_key: String,
    /// Address of the gRPC server: Push and Kick (for msg_job and other access nodes) and health.
    pub grpc_listen: SocketAddr,
    /// The push address published in etcd and in sessions; empty means `grpc_listen`.
    pub push_advertise: String,
    /// Address of the HTTP server exporting `GET /metrics` in Prometheus text format.
    pub metrics_listen: SocketAddr,
    /// etcd endpoints, `host:port` each.
    pub etcd_endpoints: Vec<String>,
    /// Number of event-loop threads; 0 means one per core (at most 256).
    pub loops: usize,
    /// How long a new connection has to log in, in milliseconds.
    pub login_deadline_ms: u64,
    /// How often clients should ping, in milliseconds (told to them at login); a
    /// connection silent for three intervals is closed.
    pub heartbeat_interval_ms: u64,
    /// How often a live connection re-asserts its session with logic, in milliseconds.
    pub session_refresh_ms: u64,
    /// Requests one connection may have in flight upstream; beyond it the node stops reading that socket.
    pub max_in_flight: u16,
    /// Connections the node holds at most, across its loops; one more gets
    /// `KICK NODE_FULL` and is closed before it is read (0: no cap but the
    /// open-files limit).
    pub max_connections: usize,
    /// Sends one connection may make per second in the long run; more are
    /// answered `TOO_MANY_REQUESTS` (retry later) and the connection stays (0: no limit).
    pub max_sends_per_sec: u32,
    /// Sends one connection may make at once after a quiet spell (at most 6553).
    pub send_burst: u32,
    /// Sends one user may make per second over all their connections on
    /// this node, so that many devices do not multiply `max_sends_per_sec` (0: no limit).
    pub max_sends_per_user_per_sec: u32,
    /// Sends one user may make at once after a quiet spell (at most 6553).
    pub user_send_burst: u32,
    /// Bytes of pushes queued towards one event loop, at most; a push over it
    /// is dropped for that loop's connections and counted
    /// (`fishchat_access_pushes_dropped_total`): the messages are stored, and
    /// clients fetch them on their next sync (0: no limit).
    pub max_queued_push_bytes: usize,
    /// LOGINs refused for a bad token that one client address (an IPv6 /64)
    /// may have in `failed_login_window_ms`; its further LOGINs are refused
    /// with `TOO_MANY_REQUESTS` until the window ends (0: no limit).
    pub max_failed_logins_per_address: u32,
    /// The window of an address's failed LOGINs, in milliseconds, from its first.
    pub failed_login_window_ms: u64,
    /// Bytes queued towards one connection beyond which it is kicked as a slow consumer.
    pub max_outbound_bytes: usize,
    /// Largest frame accepted from a client (header + body), in bytes.
    pub max_frame_len: u32,
    /// Calls to logic on the wire at once, besides the one batch of sends (the rest wait their turn).
    pub max_upstream_calls: usize,
    /// How long one upstream call (with its retries) may take, in milliseconds.
    pub upstream_timeout_ms: u64,
    /// How long a draining node waits for its clients to go, in milliseconds.
    pub drain_timeout_ms: u64,
    /// The window over which a draining node tells its clients to reconnect,
    /// in milliseconds, so that they do not all reach the gateway at once
    /// (at most `drain_timeout_ms`; 0: all at once).
    pub drain_spread_ms: u64,
    /// How often the live connection count is published in etcd, in milliseconds.
    pub load_report_ms: u64,
    /// How long no login, logout or other call to logic may start or end before
    /// the freed heap of the burst before is handed back to the system
    /// (glibc's `malloc_trim`), in milliseconds (0: never).
    pub heap_trim_quiet_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: None,
            client_listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            client_advertise: String::new(),
            client_tls_cert: String::new(),
            client_tls_key: String::new(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            push_advertise: String::new(),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            etcd_endpoints: vec!["127.0.0.1:2379".to_owned()],
            loops: 0,
            login_deadline_ms: 10_000,
            heartbeat_interval_ms: 30_000,
            session_refresh_ms: 60_000,
            max_in_flight: 32,
            max_connections: 0,
            max_sends_per_sec: 200,
            send_burst: 400,
            max_sends_per_user_per_sec: 400,
            user_send_burst: 800,
            max_queued_push_bytes: 64 << 20,
            max_failed_logins_per_address: 20,
            failed_login_window_ms: 60_000,
            max_outbound_bytes: 256 * 1024,
            max_frame_len: fishchat_codec::DEFAULT_MAX_FRAME_LEN,
            max_upstream_calls: 256,
            upstream_timeout_ms: 5_000,
            drain_timeout_ms: 5_000,
            drain_spread_ms: 2_000,
            load_report_ms: 2_000,
            heap_trim_quiet_ms: 3_000,
        }
    }
}

impl Config {
    /// The number of event loops to run.
    pub fn loop_count(&self) -> usize {
        if self.loops > 0 {
            self.loops
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The client address to publish.
    pub fn client_addr(&self) -> String {
        advertised(&self.client_advertise, self.client_listen)
    }

    /// The push address to publish.
    pub fn push_addr(&self) -> String {
        advertised(&self.push_advertise, self.grpc_listen)
    }

    /// Silence after which a logged-in connection is closed: three heartbeat intervals.
    pub fn heartbeat_deadline(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.saturating_mul(3))
    }

    /// How long an upstream call may take.
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms.max(1))
    }
}

fn advertised(configured: &str, listen: SocketAddr) -> String {
    if configured.is_empty() {
        listen.to_string()
    } else {
        configured.to_owned()
    }
}

/// Command-line overrides of [`Config`], one per key; only the ones given are applied.
#[derive(Debug, Default, clap::Args, Serialize)]
pub struct Overrides {
    /// This node's id in etcd and in session records [default: <hostname>-<pid>-<random>].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Where clients connect (client protocol framing over TCP) [default: 127.0.0.1:7100].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_listen: Option<SocketAddr>,
    /// The client address published in etcd for the gateway; empty means `client_listen` [default: ""].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_advertise: Option<String>,
    /// A certificate chain (PEM) for TLS on the client port; empty means plain TCP [default: ""].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_cert: Option<String>,
    /// The private key (PEM) of `client_tls_cert` [default: ""].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_key: Option<String>,
    /// Address of the gRPC server (push, kick, health) [default: 127.0.0.1:7101].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// The push address published in etcd and in sessions; empty means `grpc_listen` [default: ""].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_advertise: Option<String>,
    /// Address of the metrics HTTP server (`GET /metrics`) [default: 127.0.0.1:9101].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// etcd endpoints, `host:port` each, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Event-loop threads; 0 means one per core, at most 256 [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loops: Option<usize>,
    /// How long a new connection has to log in, in milliseconds [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_deadline_ms: Option<u64>,
    /// How often clients should ping, in milliseconds; silent for three intervals: closed [default: 30000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// How often a live connection re-asserts its session with logic, in milliseconds [default: 60000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_refresh_ms: Option<u64>,
    /// Requests one connection may have in flight upstream [default: 32].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u16>,
    /// Connections the node holds at most; one more gets `KICK NODE_FULL` (0: no cap) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Sends one connection may make per second; more get `TOO_MANY_REQUESTS` (0: no limit) [default: 200].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sends_per_sec: Option<u32>,
    /// Sends one connection may make at once after a quiet spell [default: 400].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_burst: Option<u32>,
    /// Sends one user may make per second over all their connections on this node (0: no limit) [default: 400].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sends_per_user_per_sec: Option<u32>,
    /// Sends one user may make at once after a quiet spell [default: 800].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_send_burst: Option<u32>,
    /// Bytes of pushes queued towards one event loop; over it pushes are dropped, clients sync (0: no limit) [default: 67108864].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_push_bytes: Option<usize>,
    /// Bad-token LOGINs one client address (IPv6: /64) may have per window (0: no limit) [default: 20].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failed_logins_per_address: Option<u32>,
    /// The window of an address's failed LOGINs, in milliseconds [default: 60000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_login_window_ms: Option<u64>,
    /// Bytes queued towards one connection beyond which it is kicked as a slow consumer [default: 262144].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_outbound_bytes: Option<usize>,
    /// Largest frame accepted from a client (header + body), in bytes [default: 65536].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame_len: Option<u32>,
    /// Calls to logic on the wire at once, besides the batch of sends [default: 256].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upstream_calls: Option<usize>,
    /// How long one upstream call (with its retries) may take, in milliseconds [default: 5000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ms: Option<u64>,
    /// How long a draining node waits for its clients to go, in milliseconds [default: 5000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
    /// The window over which a draining node tells its clients to reconnect, in milliseconds [default: 2000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_spread_ms: Option<u64>,
    /// How often the live connection count is published in etcd, in milliseconds [default: 2000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_report_ms: Option<u64>,
    /// How long calls to logic must have stopped before a burst's freed heap goes back to the system, in milliseconds (0: never) [default: 3000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_trim_quiet_ms: Option<u64>,
}
