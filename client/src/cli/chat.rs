//! `fishchat chat`: an interactive session on the terminal. It lists the
//! conversations once caught up; one conversation at a time is open, where
//! plain lines go, `/history` pages back and `/read` marks read.

mod groups;
mod line;

use anyhow::Context;
use fishchat_client::register::RegisterApi;
use fishchat_client::{Client, ClientError, Conversation, Event, SendAck};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use self::line::{HELP, Line, Target, parse};
use super::format::{conversation_name, conversation_row, message_line};
use super::names::Names;
use super::{Globals, connect};

/// Printed when a command needs an open conversation.
const NONE_OPEN: &str = "no conversation is open: /open NAME or /open #GROUP_ID first";

/// How far `/history` has paged back in the open conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// Nothing shown yet: start from the newest.
    Newest,
    /// Shown down to this seq.
    Before(u64),
    /// Shown down to the first message.
    Start,
}

/// One chat session.
struct Chat {
    client: Client,
    api: RegisterApi,
    token: String,
    names: Names,
    open: Option<Conversation>,
    cursor: Cursor,
    /// The conversation list was printed after the first catch-up.
    listed: bool,
    sends: JoinSet<()>,
}

/// Runs the session until /quit, end of input, or a kick for good.
pub async fn chat(globals: &Globals) -> anyhow::Result<()> {
    let profile = globals.profile()?;
    let options = globals.options(&profile, globals.device(&profile))?;
    let (client, mut events) = connect(options, &profile).await?;
    println!(
        "{} (user {}); /help for commands",
        profile.name, profile.user_id
    );
    let mut chat = Chat {
        client,
        api: globals.register_api(),
        token: profile.token.clone(),
        names: globals.names()?,
        open: None,
        cursor: Cursor::Newest,
        listed: false,
        sends: JoinSet::new(),
    };
    // Commands wait for the first catch-up, so they act on a current conversation list.
    while !chat.listed {
        match events.recv().await {
            Some(event) => chat.on_event(event),
            None => {
                println!("the session ended");
                return Ok(());
            }
        }
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        while chat.sends.try_join_next().is_some() {}
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => chat.on_event(event),
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
                    Ok(line) => chat.run(line).await,
                    Err(usage) => println!("{usage}"),
                }
            }
        }
    }
    // Sends still waiting for their ack finish (or time out) before the logout.
    while chat.sends.join_next().await.is_some() {}
    chat.client.close().await;
    Ok(())
}

impl Chat {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message {
                conversation,
                message,
            } => println!("{}", message_line(conversation, &message, &self.names)),
            Event::Synced if !self.listed => {
                self.listed = true;
                self.list();
            }
            Event::Synced => {}
            Event::Read {
                conversation,
                read_seq,
                unread,
            } => println!(
                "* {} read up to #{read_seq} on another device; {unread} unread",
                conversation_name(conversation, &self.names)
            ),
            Event::ReadReceipt {
                conversation,
                reader_user_id,
                read_seq,
            } => println!(
                "* {} read {} up to #{read_seq}",
                self.names.name_of(reader_user_id),
                conversation_name(conversation, &self.names)
            ),
            Event::Connected { node, .. } => println!("* connected to {node}"),
            Event::Disconnected { error } => println!("* disconnected: {error}; reconnecting"),
            Event::Kicked { reason, text } => println!("* kicked: {reason:?}: {text}"),
        }
    }

    /// Prints the conversation list.
    fn list(&self) {
        let conversations = self.client.conversations();
        if conversations.is_empty() {
            println!("no conversations yet: /to NAME text, or /create a group");
            return;
        }
        println!("conversations:");
        for info in &conversations {
            let open = self.open == Some(info.conversation);
            println!("{}", conversation_row(info, &self.names, open));
        }
    }

    async fn run(&mut self, line: Line) {
        let api = &self.api;
        let token = self.token.as_str();
        let answer = match line {
            Line::List => {
                self.list();
                return;
            }
            Line::Open(target) => return self.open(target).await,
            Line::History(count) => return self.history(count).await,
            Line::Read => return self.read().await,
            Line::Sync => return self.sync().await,
            Line::Say(text) => return self.say(text),
            Line::To(to, text) => match self.names.resolve(api, token, &to).await {
                Ok(user) => {
                    let label = self.names.name_of(user);
                    self.send(label, Conversation::User(user), text);
                    return;
                }
                Err(err) => Err(err),
            },
            Line::Group(group, text) => {
                self.send(format!("group #{group}"), Conversation::Group(group), text);
                return;
            }
            Line::Groups => groups::mine(api, token, &self.names).await,
            Line::Create { name, open } => groups::create(api, token, &name, open).await,
            Line::Join(group) => groups::join(api, token, group).await,
            Line::Leave(group) => groups::leave(api, token, group).await,
            Line::Members(group) => groups::members(api, token, group, &self.names).await,
            Line::Help => Ok(HELP.to_owned()),
            Line::Quit | Line::Empty => return,
        };
        match answer {
            Ok(text) => println!("{text}"),
            Err(err) => println!("{err:#}"),
        }
    }

    async fn open(&mut self, target: Target) {
        let conversation = match target {
            Target::Conversation(conversation) => conversation,
            Target::User(name) => match self.names.resolve(&self.api, &self.token, &name).await {
                Ok(user) => Conversation::User(user),
                Err(err) => return println!("{err:#}"),
            },
        };
        self.open = Some(conversation);
        self.cursor = Cursor::Newest;
        let unread = self
            .client
            .conversation(conversation)
            .map_or(0, |info| info.unread);
        println!(
            "open: {}; {unread} unread; lines without a leading / go here; /history to page back",
            conversation_name(conversation, &self.names)
        );
    }

    /// Shows the next `count` older messages of the open conversation, oldest first.
    async fn history(&mut self, count: u32) {
        let Some(conversation) = self.open else {
            return println!("{NONE_OPEN}");
        };
        let before = match self.cursor {
            Cursor::Newest => 0,
            Cursor::Before(seq) => seq,
            Cursor::Start => return println!("that was the first message"),
        };
        let page = match self.client.history(conversation, before, count).await {
            Ok(page) => page,
            Err(err) => return println!("history: {err}"),
        };
        for message in page.messages.iter().rev() {
            println!("{}", message_line(conversation, message, &self.names));
        }
        self.cursor = match page.messages.last() {
            Some(oldest) if page.has_more => Cursor::Before(oldest.seq),
            _ => Cursor::Start,
        };
        if self.cursor == Cursor::Start {
            println!("(the start of the conversation)");
        }
    }

    /// Marks the open conversation read up to its newest message.
    async fn read(&mut self) {
        let Some(conversation) = self.open else {
            return println!("{NONE_OPEN}");
        };
        let head = self
            .client
            .conversation(conversation)
            .map_or(0, |info| info.head_seq);
        if head == 0 {
            return println!("nothing to read");
        }
        match self.client.read(conversation, head).await {
            Ok(read) => println!("read up to #{}; {} unread", read.read_seq, read.unread),
            Err(err) => println!("read: {err}"),
        }
    }

    /// Fetches what the open conversation missed.
    async fn sync(&mut self) {
        let Some(conversation) = self.open else {
            return println!("{NONE_OPEN}");
        };
        match self.client.sync(conversation).await {
            Ok(messages) if messages.is_empty() => println!("nothing new"),
            Ok(messages) => {
                for message in &messages {
                    println!("{}", message_line(conversation, message, &self.names));
                }
            }
            Err(err) => println!("sync: {err}"),
        }
    }

    /// Sends a plain line to the open conversation.
    fn say(&mut self, text: String) {
        let Some(conversation) = self.open else {
            return println!("{NONE_OPEN}");
        };
        let label = conversation_name(conversation, &self.names);
        self.send(label, conversation, text);
    }

    /// Sends in the background, so incoming messages keep printing while the ack is awaited.
    fn send(&mut self, label: String, to: Conversation, text: String) {
        let client = self.client.clone();
        self.sends.spawn(async move {
            let sent: Result<SendAck, ClientError> = match to {
                Conversation::User(user) => client.send_to_user(user, text).await,
                Conversation::Group(group) => client.send_to_group(group, text).await,
            };
            match sent {
                Ok(ack) => println!("-> {label}: sent (message {})", ack.server_msg_id),
                Err(err) => println!("-> {label}: not sent: {err}"),
            }
        });
    }
}
