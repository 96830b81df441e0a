//! `fishchat send` and `fishchat listen`: one JSON line per result, for scripts.
//! `listen` prints each message as `{"conversation":"u:1002","seq":17,...}`
//! (see [`message_json`]) and resumes where the last run stopped printing.

use std::time::Duration;

use anyhow::bail;
use fishchat_client::{ClientError, Conversation, ErrorCode, Event};
use tokio::time::Instant;

use super::format::{ack_json, message_json};
use super::{Globals, connect};

/// Where a `send` goes.
pub enum Target {
    /// A user id or name.
    User(String),
    /// A group id.
    Group(u64),
}

/// Sends one message and prints its ack; a refusal is an error (non-zero exit).
pub async fn send(globals: &Globals, target: Target, text: String) -> anyhow::Result<()> {
    let profile = globals.profile()?;
    // Its own device, so a `listen` or `chat` of the same profile is not kicked off.
    let device = format!("{}-send", globals.device(&profile));
    let to = match target {
        Target::User(to) => {
            let mut names = globals.names()?;
            let api = globals.register_api();
            Conversation::User(names.resolve(&api, &profile.token, &to).await?)
        }
        Target::Group(group) => Conversation::Group(group),
    };
    let mut options = globals.options(&profile, device)?;
    // It only sends: catching up on its conversations would be wasted work.
    options.catch_up = false;
    options.state_file = None;
    let (client, _events) = connect(options, &profile).await?;
    let sent = match to {
        Conversation::User(user) => client.send_to_user(user, text).await,
        Conversation::Group(group) => client.send_to_group(group, text).await,
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
        Err(err @ ClientError::ResendMismatch { .. }) => {
            let code = ErrorCode::ResendMismatch.as_str_name();
            println!(
                "{}",
                serde_json::json!({ "error": code, "message": err.to_string() })
            );
            bail!("refused: {code}: {err}")
        }
        Err(err) => Err(err.into()),
    }
}

/// Prints messages as they arrive until `count` were printed or `timeout`
/// passed. The state file keeps only what was printed, so messages past
/// `--count` come with the next run.
pub async fn listen(
    globals: &Globals,
    count: Option<u64>,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
    let profile = globals.profile()?;
    let options = globals.options(&profile, globals.device(&profile))?;
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
            Some(Event::Message {
                conversation,
                message,
            }) => {
                println!("{}", message_json(conversation, &message));
                received += 1;
            }
            Some(Event::Connected { node, .. }) => tracing::info!(%node, "connected"),
            Some(Event::Synced) => tracing::info!("caught up"),
            Some(Event::Read { .. } | Event::ReadReceipt { .. }) => {}
            Some(Event::Disconnected { error }) => eprintln!("disconnected: {error}; reconnecting"),
            Some(Event::Kicked { reason, text }) => eprintln!("kicked: {reason:?}: {text}"),
            None => bail!("the connection ended for good (see above)"),
        }
    }
    client.close().await;
    Ok(())
}
