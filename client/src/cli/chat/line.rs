//! What the user types in `fishchat chat`, and the help that lists it.

use fishchat_client::Conversation;

/// The command list `/help` prints.
pub const HELP: &str = "\
commands:
  /list                   your conversations with unread counts (* marks the open one)
  /open NAME|#GROUP_ID    open a conversation (also u:USER_ID, g:GROUP_ID as /list shows them);
                          lines without a leading / then go there
  /history [N]            N older messages of the open conversation (default 20); again for more
  /read                   mark the open conversation read up to its newest message
  /sync                   fetch anything the open conversation missed
  /to NAME text           send a direct message to any user (a number is taken as a user id)
  /group GROUP_ID text    send to a group
  /groups                 list your groups
  /create [--open] NAME   create a group you own (--open: anyone may join without approval)
  /join GROUP_ID          join a group, or ask to join one that is not open
  /leave GROUP_ID         leave a group
  /members GROUP_ID       list a group's members and their roles
  /quit                   log out and leave
  /help                   this text";

/// Messages `/history` shows when not told how many.
pub const DEFAULT_HISTORY: u32 = 20;

/// What `/open` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A conversation by its id (`#5`, `g:5`, `u:1002`).
    Conversation(Conversation),
    /// A user name (or a number: a user id), looked up when used.
    User(String),
}

/// One line typed by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    List,
    Open(Target),
    History(u32),
    Read,
    Sync,
    To(String, String),
    Group(u64, String),
    Groups,
    Create {
        name: String,
        open: bool,
    },
    Join(u64),
    Leave(u64),
    Members(u64),
    /// Text for the open conversation.
    Say(String),
    Quit,
    Help,
    Empty,
}

pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if !line.starts_with('/') {
        return Ok(if line.is_empty() {
            Line::Empty
        } else {
            Line::Say(line.to_owned())
        });
    }
    let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let split = |usage: &str| -> Result<(String, String), String> {
        match rest.split_once(char::is_whitespace) {
            Some((target, text)) if !text.trim().is_empty() => {
                Ok((target.to_owned(), text.trim_start().to_owned()))
            }
            _ => Err(format!("usage: {usage}")),
        }
    };
    let group_id = |usage: &str| -> Result<u64, String> {
        let id = rest.trim_start_matches('#');
        match id.parse() {
            Ok(id) => Ok(id),
            Err(_) if rest.is_empty() => Err(format!("usage: {usage}")),
            Err(_) => Err(format!("{rest:?} is not a group id")),
        }
    };
    let none = |line: Line| -> Result<Line, String> {
        if rest.is_empty() {
            Ok(line)
        } else {
            Err(format!("{command} takes no arguments"))
        }
    };
    match command {
        "/list" => none(Line::List),
        "/open" => parse_target(rest).map(Line::Open),
        "/history" if rest.is_empty() => Ok(Line::History(DEFAULT_HISTORY)),
        "/history" => match rest.parse() {
            Ok(n) if n > 0 => Ok(Line::History(n)),
            _ => Err("usage: /history [N] (N a positive number)".to_owned()),
        },
        "/read" => none(Line::Read),
        "/sync" => none(Line::Sync),
        "/to" => split("/to NAME text").map(|(to, text)| Line::To(to, text)),
        "/group" => {
            let (group, text) = split("/group GROUP_ID text")?;
            let group = group
                .trim_start_matches('#')
                .parse()
                .map_err(|_| format!("{group:?} is not a group id"))?;
            Ok(Line::Group(group, text))
        }
        "/groups" => none(Line::Groups),
        "/create" => {
            let (open, name) = match rest.strip_prefix("--open") {
                Some(name) if name.is_empty() || name.starts_with(char::is_whitespace) => {
                    (true, name.trim())
                }
                _ => (false, rest),
            };
            if name.is_empty() {
                return Err("usage: /create [--open] NAME".to_owned());
            }
            Ok(Line::Create {
                name: name.to_owned(),
                open,
            })
        }
        "/join" => group_id("/join GROUP_ID").map(Line::Join),
        "/leave" => group_id("/leave GROUP_ID").map(Line::Leave),
        "/members" => group_id("/members GROUP_ID").map(Line::Members),
        "/quit" => none(Line::Quit),
        "/help" => none(Line::Help),
        _ => Err("unknown command; /help lists them".to_owned()),
    }
}

/// `#5` or `g:5` (a group), `u:1002` (a user id), else a user name.
fn parse_target(text: &str) -> Result<Target, String> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err("usage: /open NAME|#GROUP_ID".to_owned());
    }
    if let Some(group) = text.strip_prefix('#') {
        return group
            .parse()
            .map(|group| Target::Conversation(Conversation::Group(group)))
            .map_err(|_| format!("{text:?} is not a group id"));
    }
    match text.parse() {
        Ok(conversation) => Ok(Target::Conversation(conversation)),
        Err(_) => Ok(Target::User(text.to_owned())),
    }
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
        assert_eq!(parse(" hello there "), Ok(Line::Say("hello there".into())));
        assert!(parse("/to bob").unwrap_err().contains("usage"));
        assert!(parse("/group x hi").unwrap_err().contains("not a group id"));
        assert!(parse("/nonsense").unwrap_err().contains("/help"));
        assert!(parse("/list all").unwrap_err().contains("no arguments"));
    }

    #[test]
    fn conversations_open_by_name_or_id() {
        let group = Target::Conversation(Conversation::Group(5));
        assert_eq!(parse("/open #5"), Ok(Line::Open(group.clone())));
        assert_eq!(parse("/open g:5"), Ok(Line::Open(group)));
        assert_eq!(
            parse("/open u:12"),
            Ok(Line::Open(Target::Conversation(Conversation::User(12))))
        );
        assert_eq!(
            parse("/open bob"),
            Ok(Line::Open(Target::User("bob".into())))
        );
        assert!(parse("/open #x").unwrap_err().contains("not a group id"));
        assert!(parse("/open").unwrap_err().contains("usage"));
    }

    #[test]
    fn history_and_group_commands_take_their_arguments() {
        assert_eq!(parse("/history"), Ok(Line::History(DEFAULT_HISTORY)));
        assert_eq!(parse("/history 5"), Ok(Line::History(5)));
        assert!(parse("/history 0").unwrap_err().contains("usage"));
        assert_eq!(
            parse("/create my team"),
            Ok(Line::Create {
                name: "my team".into(),
                open: false
            })
        );
        assert_eq!(
            parse("/create --open lobby"),
            Ok(Line::Create {
                name: "lobby".into(),
                open: true
            })
        );
        assert!(parse("/create --open").unwrap_err().contains("usage"));
        assert_eq!(parse("/join #4"), Ok(Line::Join(4)));
        assert_eq!(parse("/leave 4"), Ok(Line::Leave(4)));
        assert_eq!(parse("/members 4"), Ok(Line::Members(4)));
        assert!(parse("/join").unwrap_err().contains("usage"));
        assert!(parse("/members x").unwrap_err().contains("not a group id"));
    }
}
