//! `fishchat`: the command-line client. Wiring only; the subcommands live in `cli/`.

mod cli;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use fishchat_client::Connection;
use fishchat_codec::{Body, pb};
use tracing_subscriber::EnvFilter;

use cli::script::Target;
use cli::{Globals, account, chat, script};

#[derive(Debug, Parser)]
#[command(name = "fishchat", version, about = "FishChat command-line client")]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sends PING to a FishChat server and prints the round trip.
    Ping {
        /// host:port of an access node.
        #[arg(long, default_value = "127.0.0.1:7100")]
        addr: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Creates a user on the register service.
    Register {
        /// The user name.
        name: String,
        /// The password (else FISHCHAT_PASSWORD, else asked on the terminal).
        #[arg(long, env = "FISHCHAT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Logs in and keeps the token as the default identity.
    Login {
        /// The user name.
        name: String,
        /// The password (else FISHCHAT_PASSWORD, else asked on the terminal).
        #[arg(long, env = "FISHCHAT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Chats interactively: lists your conversations with unread counts, then
    /// /open one to talk there (/help lists the commands).
    Chat,
    /// Sends one message and prints its ack as a JSON line
    /// ({"client_msg_id","server_msg_id","timestamp_ms"}).
    Send {
        /// The recipient: a user name (looked up on register) or a user id.
        #[arg(
            long,
            value_name = "ID|NAME",
            conflicts_with = "group",
            required_unless_present = "group"
        )]
        to: Option<String>,
        /// The group id.
        #[arg(long, value_name = "ID")]
        group: Option<u64>,
        /// The message text.
        text: String,
    },
    /// Prints each incoming message as one JSON line, for example
    /// {"conversation":"u:1002","seq":17,"from":1002,"to":1001,"text":"hi",
    /// "server_msg_id":88,"client_msg_id":"..","timestamp_ms":..}: conversation is
    /// u:<the other user's id> for a direct chat or g:<group id> (with "group"
    /// instead of "to"), seq the message's position in it. Each conversation
    /// comes in seq order; a later run resumes after the last message printed.
    #[command(verbatim_doc_comment)]
    Listen {
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let Cli { globals, command } = Cli::parse();
    match command {
        Command::Ping { addr, timeout } => ping(&addr, timeout).await,
        Command::Register { name, password } => {
            let password = account::password(password)?;
            account::register(&globals, &name, &password).await
        }
        Command::Login { name, password } => {
            let password = account::password(password)?;
            account::login(&globals, &name, &password).await
        }
        Command::Chat => chat::chat(&globals).await,
        Command::Send { to, group, text } => {
            let target = match (to, group) {
                (Some(to), None) => Target::User(to),
                (None, Some(group)) => Target::Group(group),
                _ => bail!("give exactly one of --to and --group"),
            };
            script::send(&globals, target, text).await
        }
        Command::Listen { count, timeout } => script::listen(&globals, count, timeout).await,
    }
}

async fn ping(addr: &str, timeout: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(timeout), async {
        let mut conn = Connection::connect(addr).await?;
        conn.send(1, &pb::Ping::default().into()).await?;
        conn.recv().await
    })
    .await
    .context("no reply in time")?
    .with_context(|| format!("ping {addr}"))?;
    match reply {
        (1, Body::Pong(_)) => println!("pong from {addr} in {:?}", started.elapsed()),
        other => bail!("unexpected reply {other:?}"),
    }
    Ok(())
}
