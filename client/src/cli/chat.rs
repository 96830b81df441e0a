//! `fishchat chat`: an interactive session on the terminal.

use anyhow::Context;
use fishchat_client::{Client, ClientError, Event, SendAck};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use super::format::message_line;
use super::names::Names;
use super::profile::Profile;
use super::{Globals, connect};

const HELP: &str = "\
commands:
  /to NAME_OR_ID text   send a direct message (names: profiles logged in here)
  /group GROUP_ID text  send to a group
  /groups               list your groups
  /sync                 fetch anything missed
  /quit                 log out and leave
  /help                 this text";

/// One line typed by the user.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    To(String, String),
    Group(u64, String),
    Groups,
    Sync,
    Quit,
    Help,
    Empty,
}

fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim();
    let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let split = |usage: &str| -> Result<(String, String), String> {
        match rest.split_once(char::is_whitespace) {
            Some((target, text)) if !text.trim().is_empty() => {
                Ok((target.to_owned(), text.trim_start().to_owned()))
            }
            _ => Err(format!("usage: {usage}")),
        }
    };
    match command {
        "" => Ok(Line::Empty),
        "/to" => split("/to NAME_OR_ID text").map(|(to, text)| Line::To(to, text)),
        "/group" => {
            let (group, text) = split("/group GROUP_ID text")?;
            let group = group
                .parse()
                .map_err(|_| format!("{group:?} is not a group id"))?;
            Ok(Line::Group(group, text))
        }
        "/groups" => Ok(Line::Groups),
        "/sync" => Ok(Line::Sync),
        "/quit" => Ok(Line::Quit),
        "/help" => Ok(Line::Help),
        _ => Err("unknown command; /help lists them".to_owned()),
    }
}

/// Runs the session until /quit, end of input, or a kick for good.
pub async fn chat(globals: &Globals) -> anyhow::Result<()> {
    let profile = globals.profile()?;
    let options = globals.options(&profile, globals.device(&profile))?;
    let (client, mut events) = connect(options, &profile).await?;
    let names = globals.names()?;
    println!(
        "{} (user {}); /help for commands",
        profile.name, profile.user_id
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sends = JoinSet::new();
    loop {
        while sends.try_join_next().is_some() {}
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => print_event(&event, &names),
                None => {
                    println!("the session ended");
                    return Ok(());
                }
            },
            line = lines.next_line() => {
                let Some(line) = line.context("reading the terminal")? else {
                    break;
                };
                match parse(&line) {
                    Ok(Line::Quit) => break,
                    Ok(line) => run(line, &client, &names, globals, &profile, &mut sends).await,
                    Err(usage) => println!("{usage}"),
                }
            }
        }
    }
    // Sends still waiting for their ack finish (or time out) before the logout.
    while sends.join_next().await.is_some() {}
    client.close().await;
    Ok(())
}

fn print_event(event: &Event, names: &Names) {
    match event {
        Event::Message(message) => println!("{}", message_line(message, names)),
        Event::Connected { node, .. } => println!("* connected to {node}"),
        Event::Disconnected { error } => println!("* disconnected: {error}; reconnecting"),
        Event::Kicked { reason, text } => println!("* kicked: {reason:?}: {text}"),
    }
}

async fn run(
    line: Line,
    client: &Client,
    names: &Names,
    globals: &Globals,
    profile: &Profile,
    sends: &mut JoinSet<()>,
) {
    match line {
        Line::To(to, text) => match names.resolve(&to) {
            Ok(to) => {
                let client = client.clone();
                spawn_send(sends, names.name_of(to), async move {
                    client.send_to_user(to, text).await
                });
            }
            Err(err) => println!("{err}"),
        },
        Line::Group(group, text) => {
            let client = client.clone();
            spawn_send(sends, format!("group {group}"), async move {
                client.send_to_group(group, text).await
            });
        }
        Line::Groups => match globals.register_api().my_groups(&profile.token).await {
            Ok(groups) if groups.is_empty() => println!("no groups"),
            Ok(groups) => {
                for group in groups {
                    println!(
                        "group {} {:?} (owner {})",
                        group.group_id,
                        group.name,
                        names.name_of(group.owner_id)
                    );
                }
            }
            Err(err) => println!("groups: {err}"),
        },
        Line::Sync => match client.sync().await {
            Ok(messages) if messages.is_empty() => println!("nothing new"),
            Ok(messages) => {
                for message in &messages {
                    println!("{}", message_line(message, names));
                }
            }
            Err(err) => println!("sync: {err}"),
        },
        Line::Help => println!("{HELP}"),
        Line::Quit | Line::Empty => {}
    }
}

/// Sends in the background, so incoming messages keep printing while the ack is awaited.
fn spawn_send(
    sends: &mut JoinSet<()>,
    to: String,
    send: impl Future<Output = Result<SendAck, ClientError>> + Send + 'static,
) {
    sends.spawn(async move {
        match send.await {
            Ok(ack) => println!("-> {to}: sent (message {})", ack.server_msg_id),
            Err(err) => println!("-> {to}: not sent: {err}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands_or_usage() {
        assert_eq!(
            parse("/to bob hi  there"),
            Ok(Line::To("bob".into(), "hi  there".into()))
        );
        assert_eq!(parse("/group 7 hello"), Ok(Line::Group(7, "hello".into())));
        assert_eq!(parse("  /groups "), Ok(Line::Groups));
        assert_eq!(parse("/sync"), Ok(Line::Sync));
        assert_eq!(parse("/quit"), Ok(Line::Quit));
        assert_eq!(parse(""), Ok(Line::Empty));
        assert!(parse("/to bob").unwrap_err().contains("usage"));
        assert!(parse("/group x hi").unwrap_err().contains("not a group id"));
        assert!(parse("hello").unwrap_err().contains("/help"));
    }
}
