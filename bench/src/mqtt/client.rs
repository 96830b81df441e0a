//! One MQTT client connection: a socket bound to a chosen source address (so
//! many addresses share the ephemeral ports), whole packets written, whole
//! packets read.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::idle::wire::dial;
use crate::push::clock;
use crate::subscribers::{Event, Failure, Protocol};

use super::codec::{self, Packet};

/// The largest packet accepted from the broker.
const MAX_PACKET: usize = 1 << 20;

/// A client connection to the broker.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl Conn {
    /// Connects to `broker`, from `source` (port chosen by the kernel) when given.
    pub async fn connect(broker: SocketAddr, source: Option<IpAddr>) -> Result<Conn, Failure> {
        let stream = dial(broker, source).await?;
        Ok(Conn {
            stream,
            input: BytesMut::new(),
            output: BytesMut::new(),
        })
    }

    /// CONNECT as `client_id` and wait for an accepting CONNACK.
    pub async fn handshake(&mut self, client_id: &str, keepalive_secs: u16) -> Result<(), Failure> {
        self.send(|out| codec::connect(client_id, keepalive_secs, out))
            .await?;
        match self.recv().await? {
            Packet::ConnAck { code: 0, .. } => Ok(()),
            Packet::ConnAck { code, .. } => Err(Failure(format!("CONNACK refused: {code}"))),
            other => Err(unexpected("CONNACK", &other)),
        }
    }

    /// SUBSCRIBE to `topic` at QoS 0 and wait for a granting SUBACK.
    pub async fn subscribe(&mut self, topic: &str) -> Result<(), Failure> {
        const PACKET_ID: u16 = 1;
        self.send(|out| codec::subscribe(PACKET_ID, topic, 0, out))
            .await?;
        match self.recv().await? {
            Packet::SubAck { packet_id, codes }
                if packet_id == PACKET_ID && codes.first().is_some_and(|&c| c < 0x80) =>
            {
                Ok(())
            }
            Packet::SubAck { .. } => Err(Failure("SUBACK refused".into())),
            other => Err(unexpected("SUBACK", &other)),
        }
    }

    /// Encodes packets with `encode` and writes them all.
    pub async fn send(&mut self, encode: impl FnOnce(&mut BytesMut)) -> Result<(), Failure> {
        self.output.clear();
        encode(&mut self.output);
        self.stream
            .write_all(&self.output)
            .await
            .map_err(|e| Failure::io("write", &e))
    }

    /// Reads the next whole packet; cancel-safe (a partial read stays buffered).
    pub async fn recv(&mut self) -> Result<Packet, Failure> {
        loop {
            match codec::decode(&mut self.input, MAX_PACKET) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(e) => return Err(Failure(e.0.to_string())),
            }
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) => return Err(Failure("closed by the broker".into())),
                Ok(_) => {}
                Err(e) => return Err(Failure::io("read", &e)),
            }
        }
    }
}

/// A failure for a packet other than the one awaited.
pub fn unexpected(awaited: &str, got: &Packet) -> Failure {
    let name = match got {
        Packet::ConnAck { .. } => "CONNACK".to_string(),
        Packet::SubAck { .. } => "SUBACK".to_string(),
        Packet::Publish { .. } => "PUBLISH".to_string(),
        Packet::PingResp => "PINGRESP".to_string(),
        Packet::Other(kind) => format!("type {kind}"),
    };
    Failure(format!("expected {awaited}, got {name}"))
}

/// MQTT subscribers: CONNECT as `<prefix>-<i>`, SUBSCRIBE at QoS 0 to the
/// client's own topic `u/<i>`, PINGREQ every keepalive.
#[derive(Debug, Clone)]
pub struct Mqtt {
    /// The broker's address.
    pub broker: SocketAddr,
    /// The CONNECT keepalive, and the PINGREQ interval.
    pub keepalive_secs: u16,
    /// Client ids are `<prefix>-<i>`.
    pub client_prefix: String,
}

impl Protocol for Mqtt {
    type Conn = Conn;

    async fn setup(&self, index: usize, source: Option<IpAddr>) -> Result<Conn, Failure> {
        let mut conn = Conn::connect(self.broker, source).await?;
        conn.handshake(
            &format!("{}-{index}", self.client_prefix),
            self.keepalive_secs,
        )
        .await?;
        conn.subscribe(&topic(index)).await?;
        Ok(conn)
    }

    fn ping_every(&self) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(self.keepalive_secs.max(1))))
    }

    async fn ping(&self, conn: &mut Conn) -> Result<(), Failure> {
        conn.send(codec::pingreq).await
    }

    async fn next(&self, conn: &mut Conn) -> Result<Event, Failure> {
        match conn.recv().await? {
            Packet::PingResp => Ok(Event::Pong),
            Packet::Publish { payload, .. } => Ok(Event::Delivery {
                sent_us: clock::sent_us(&payload),
            }),
            other => Err(unexpected("PUBLISH or PINGRESP", &other)),
        }
    }

    async fn close(&self, conn: &mut Conn) {
        let _ = conn.send(codec::disconnect).await;
    }
}

/// Subscriber `index`'s topic.
fn topic(index: usize) -> String {
    format!("u/{index}")
}

/// Encodes a QoS 0 PUBLISH of a stamped payload to subscriber `index`'s topic.
pub fn stamped_publish(index: usize, payload_bytes: usize, out: &mut BytesMut) {
    let payload = clock::stamped(clock::now_us(), payload_bytes);
    codec::publish(&topic(index), &payload, out);
}
