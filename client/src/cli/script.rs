//! `fishchat send` and `fishchat listen`: one JSON line per result, for scripts.

use std::time::Duration;

use anyhow::bail;
use fishchat_client::{ClientError, Event};
use tokio::time::Instant;

use super::format::{ack_json, message_json};
use super::{Globals, connect};

/// Where a `send` goes.
pub enum Target {
    /// A user id or a known name.
    User(String),
    /// A group id.
    Group(u64),
}

/// Sends one message and prints its ack; a refusal is an error (non-zero exit).
pub async fn send(globals: &Globals, target: Target, text: String) -> anyhow::Result<()> {
    let profile = globals.profile()?;
    // Its own device, so a `listen` or `chat` of the same profile is not kicked off.
    let device = format!("{}-send", globals.device(&profile));
    let options = globals.options(&profile, device)?;
    let (client, _events) = connect(options, &profile).await?;
    let sent = match target {
        Target::User(to) => {
            let to = globals.names()?.resolve(&to)?;
            client.send_to_user(to, text).await
        }
        Target::Group(group) => client.send_to_group(group, text).await,
    };
    client.close().await;
    match sent {
        Ok(ack) => {
            println!("{}", ack_json(&ack));
            Ok(())
        }
        Err(ClientError::Refused { code, message }) => {
            println!(
                "{}",
                serde_json::json!({ "error": code.as_str_name(), "message": message })
            );
            bail!("refused: {}: {message}", code.as_str_name())
        }
        Err(err) => Err(err.into()),
    }
}

/// Prints messages as they arrive (acking them) until `count` arrived or `timeout` passed.
pub async fn listen(
    globals: &Globals,
    count: Option<u64>,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
    let profile = globals.profile()?;
    let mut options = globals.options(&profile, globals.device(&profile))?;
    // The server's delivery cursor is the bookmark: only printed messages are
    // acked, so messages past --count are not skipped by the next listen.
    options.state_file = None;
    options.auto_ack = false;
    let (client, mut events) = connect(options, &profile).await?;
    let deadline = timeout.map(|secs| Instant::now() + Duration::from_secs(secs));
    let mut received = 0;
    while count.is_none_or(|count| received < count) {
        let event = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(event) => event,
                Err(_) => break,
            },
            None => events.recv().await,
        };
        match event {
            Some(Event::Message(message)) => {
                println!("{}", message_json(&message));
                // A failed ack (say, during a reconnect) is covered by the next one.
                if let Err(err) = client.ack(message.seq).await {
                    tracing::warn!(%err, seq = message.seq, "ack failed");
                }
                received += 1;
            }
            Some(Event::Connected { node, .. }) => tracing::info!(%node, "connected"),
            Some(Event::Disconnected { error }) => eprintln!("disconnected: {error}; reconnecting"),
            Some(Event::Kicked { reason, text }) => eprintln!("kicked: {reason:?}: {text}"),
            None => bail!("the connection ended for good (see above)"),
        }
    }
    client.close().await;
    Ok(())
}
