//! The client side of the wire, as small as a load generator needs: open a
//! socket (bound to a chosen source address, so many addresses share the load
//! of ephemeral ports), write one frame, read the next frame.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::ensure;
use bytes::BytesMut;
use fishchat_client::{ClientTls, Stream};
use fishchat_codec::pb::{self, Command};
use fishchat_codec::{Body, DEFAULT_MAX_FRAME_LEN, Frame, FrameDecoder, encode_frame};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Where client sockets come from: the source addresses they bind, round-robin
/// (each address has its own ~28k ephemeral ports towards one server address).
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct Sources {
    /// Source addresses to bind client sockets to, round-robin (each gives
    /// ~28k ephemeral ports).
    #[arg(long, value_delimiter = ',', conflicts_with = "source_ip_count")]
    pub source_ips: Vec<IpAddr>,
    /// Use source addresses 127.0.0.2 .. 127.0.0.<K+1>.
    #[arg(long)]
    pub source_ip_count: Option<u8>,
}

impl Sources {
    /// Refuses a count outside 1..=253 (127.0.0.2 ..= 127.0.0.254).
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.source_ip_count.is_none_or(|k| (1..=253).contains(&k)),
            "--source-ip-count must be 1..=253"
        );
        Ok(())
    }

    /// The addresses, in order; empty when the kernel is to choose.
    pub fn list(&self) -> Vec<IpAddr> {
        match self.source_ip_count {
            Some(count) => loopback_sources(count),
            None => self.source_ips.clone(),
        }
    }
}

/// The loopback source addresses 127.0.0.2 .. 127.0.0.<count+1>.
pub fn loopback_sources(count: u8) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i))))
        .collect()
}

/// The source address of connection `index`: number `index mod count`, or
/// none (the kernel chooses) when there are none.
pub fn source_for(ips: &[IpAddr], index: usize) -> Option<IpAddr> {
    ips.get(index.checked_rem(ips.len())?).copied()
}

/// Where a scenario's clients connect, and the register API their accounts
/// come from: the same flags for idle and the chat scenarios.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Endpoints {
    /// An access node's client address (repeatable; connections go round-robin).
    #[arg(long = "access", required_unless_present = "gateway")]
    pub access: Vec<SocketAddr>,
    /// Ask this gateway (TCP, GATEWAY_LOOKUP) for an access node per connection instead.
    #[arg(long, conflicts_with = "access")]
    pub gateway: Option<SocketAddr>,
    /// The register HTTP API, for accounts, tokens (and groups).
    #[arg(long, default_value = "http://127.0.0.1:8010")]
    pub register: String,
}

impl Endpoints {
    /// How connections reach these endpoints from `source_ips`.
    pub fn dial(&self, source_ips: Vec<IpAddr>) -> Dial {
        Dial {
            access: self.access.clone(),
            gateway: self.gateway,
            source_ips,
        }
    }
}

/// Where a load generator's connection `i` goes and comes from: access node
/// `i mod count` (or the one a gateway names) from source address `i mod
/// count`. A worker process gets it as flags.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Dial {
    /// Access nodes' client addresses; connection `i` uses number `i mod count`.
    #[arg(long = "access")]
    pub access: Vec<SocketAddr>,
    /// Ask this gateway for an access node per connection instead.
    #[arg(long)]
    pub gateway: Option<SocketAddr>,
    /// Source addresses; connection `i` binds number `i mod count`.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
}

/// TLS to the access nodes (the gateway lookup stays plain TCP), for nodes
/// with `client_tls_cert`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize)]
pub struct TlsFlags {
    /// Speak TLS to the access nodes, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name the access nodes' certificates must carry (default: the host of their address).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl TlsFlags {
    /// The TLS settings, read once per process; `None` for plain TCP.
    pub fn load(&self) -> anyhow::Result<Option<ClientTls>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        Ok(Some(ClientTls::from_ca_file(
            ca,
            self.tls_server_name.as_deref(),
        )?))
    }

    /// The flags that give a worker process these settings.
    pub fn to_args(&self) -> Vec<String> {
        let ca = self
            .tls_ca
            .iter()
            .map(|ca| format!("--tls-ca={}", ca.display()));
        let name = self
            .tls_server_name
            .iter()
            .map(|n| format!("--tls-server-name={n}"));
        ca.chain(name).collect()
    }
}

impl Dial {
    /// Opens connection `index` (asking the gateway first when there is one).
    pub async fn connect(&self, index: usize) -> Result<Wire, Failure> {
        self.connect_with(index, None).await
    }

    /// Opens connection `index`, over TLS when `tls` is given.
    pub async fn connect_with(
        &self,
        index: usize,
        tls: Option<&ClientTls>,
    ) -> Result<Wire, Failure> {
        let source = source_for(&self.source_ips, index);
        let target = match self.gateway {
            Some(gateway) => lookup(gateway, source).await?,
            None => *self
                .access
                .get(index.checked_rem(self.access.len()).unwrap_or(0))
                .ok_or_else(|| Failure("no access address".into()))?,
        };
        let tcp = dial(target, source).await?;
        let stream = match tls {
            Some(tls) => Stream::Tls(Box::new(
                tls.handshake(tcp, &target.to_string())
                    .await
                    .map_err(|e| Failure::io("tls", &e))?,
            )),
            None => Stream::Plain(tcp),
        };
        Ok(Wire::over(stream))
    }

    /// The flags that give a worker process this dial.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .access
            .iter()
            .map(|a| format!("--access={a}"))
            .collect();
        args.extend(self.gateway.map(|g| format!("--gateway={g}")));
        if !self.source_ips.is_empty() {
            let ips: Vec<String> = self.source_ips.iter().map(ToString::to_string).collect();
            args.push(format!("--source-ips={}", ips.join(",")));
        }
        args
    }
}

/// A client connection: the socket and what was read but not yet decoded.
#[derive(Debug)]
pub struct Wire {
    stream: Stream,
    input: BytesMut,
    decoder: FrameDecoder,
}

/// Why a connection attempt or an exchange failed, named for the failure table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    /// A failure of the I/O `stage` ("connect", "read", ...), by error kind.
    pub(crate) fn io(stage: &str, err: &std::io::Error) -> Self {
        Failure(format!("{stage}: {:?}", err.kind()))
    }
}

/// A TCP connection to `target` from `source` (each source address has its
/// own ephemeral ports), without Nagle: frames are written whole.
pub(crate) async fn dial(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, Failure> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| Failure::io("socket", &e))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| Failure::io("bind", &e))?;
    }
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| Failure::io("connect", &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Wire {
    /// Connects to `target`, from `source` (port chosen by the kernel) when given.
    pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<Wire, Failure> {
        Ok(Wire::over(Stream::Plain(dial(target, source).await?)))
    }

    fn over(stream: Stream) -> Wire {
        Wire {
            stream,
            input: BytesMut::new(),
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_LEN),
        }
    }

    /// Writes one frame.
    pub async fn send(
        &mut self,
        command: Command,
        request_id: u32,
        body: &impl prost::Message,
    ) -> Result<(), Failure> {
        let mut frame = BytesMut::new();
        encode_frame(command, request_id, body, DEFAULT_MAX_FRAME_LEN, &mut frame)
            .map_err(|e| Failure(format!("encode: {e}")))?;
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| Failure::io("write", &e))?;
        // A TLS stream may still hold the record's ciphertext.
        self.stream
            .flush()
            .await
            .map_err(|e| Failure::io("write", &e))
    }

    /// Reads the next whole frame and decodes its body; cancel-safe (a partial
    /// read stays buffered).
    pub async fn recv(&mut self) -> Result<(u32, Body), Failure> {
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(frame)) => return decode(&frame),
                Ok(None) => {}
                Err(err) => return Err(Failure(format!("bad frame: {:?}", err.code()))),
            }
            self.input.reserve(256);
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) => return Err(Failure("closed by server".into())),
                Ok(_) => {}
                Err(err) => return Err(Failure::io("read", &err)),
            }
        }
    }

    /// Sends LOGOUT and closes, ignoring errors: the run is over for this connection.
    pub async fn logout(mut self) {
        let _ = self.send(Command::Logout, 0, &pb::Logout {}).await;
        let _ = self.stream.shutdown().await;
    }
}

fn decode(frame: &Frame) -> Result<(u32, Body), Failure> {
    frame
        .body()
        .map(|body| (frame.header.request_id, body))
        .map_err(|e| Failure(format!("bad body: {:?}", e.code())))
}

/// Asks the gateway at `gateway` for an access node's client address.
pub async fn lookup(gateway: SocketAddr, source: Option<IpAddr>) -> Result<SocketAddr, Failure> {
    let mut wire = Wire::connect(gateway, source)
        .await
        .map_err(|Failure(f)| Failure(format!("gateway {f}")))?;
    wire.send(Command::GatewayLookup, 1, &pb::GatewayLookup {})
        .await?;
    match wire.recv().await {
        Ok((_, Body::GatewayReply(reply))) => reply.access_addr.parse().map_err(|_| {
            Failure(format!(
                "gateway gave a bad address {:?}",
                reply.access_addr
            ))
        }),
        Ok((_, Body::Error(err))) => {
            Err(Failure(format!("gateway refused: {}", code_name(err.code))))
        }
        Ok((_, other)) => Err(Failure(format!("gateway answered {:?}", other.command()))),
        Err(Failure(f)) => Err(Failure(format!("gateway {f}"))),
    }
}

/// The protocol name of an error code number.
pub fn code_name(code: i32) -> String {
    pb::ErrorCode::try_from(code)
        .map_or_else(|_| format!("code {code}"), |c| c.as_str_name().to_owned())
}

/// The protocol name of a kick reason number.
pub fn kick_name(reason: i32) -> String {
    pb::KickReason::try_from(reason).map_or_else(
        |_| format!("reason {reason}"),
        |r| r.as_str_name().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_take_the_source_addresses_round_robin() {
        let sources = Sources {
            source_ips: Vec::new(),
            source_ip_count: Some(2),
        };
        let ips = sources.list();
        assert_eq!(ips, loopback_sources(2));
        assert_eq!(source_for(&ips, 0), Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(source_for(&ips, 3), Some(IpAddr::from([127, 0, 0, 3])));
        assert_eq!(source_for(&[], 3), None);
        let too_many = Sources {
            source_ip_count: Some(254),
            ..Sources::default()
        };
        assert!(too_many.check().is_err());
    }
}
