//! The configuration reference agrees with the code: for every service, each
//! key of its `Config` is a `--key` option in the binary's `--help` (whose
//! `[default: ...]` is the real default), a key of `deploy/local/<service>.toml`
//! (with the default value) and a row of its table in `docs/config.md` (with
//! the default value); and a command-line option wins over the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, FromArgMatches};
use fishchat_e2e::services::bin_dir;
use fishchat_node::load_config;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How docs, `--help` and the deploy files show a default that is made up at start.
const MADE_UP_ID: &str = "<hostname>-<pid>-<random>";

/// What the code says about one service's settings.
struct Reference {
    /// The service, as in `deploy/local/<service>.toml` and `docs/config.md`.
    service: &'static str,
    /// The binary's file name.
    binary: &'static str,
    /// Every key of `Config`.
    keys: BTreeSet<String>,
    /// The defaults that are fixed, rendered as TOML; keys absent here are
    /// made up at start (or absent, `None`).
    defaults: toml::Table,
}

impl Reference {
    fn of<C: Default + Serialize>(service: &'static str, binary: &'static str) -> Self {
        let json = serde_json::to_value(C::default()).expect("Config serializes to JSON");
        let keys = json
            .as_object()
            .expect("Config is a struct")
            .keys()
            .cloned()
            .collect();
        let first = toml::Table::try_from(C::default()).expect("Config serializes to TOML");
        let second = toml::Table::try_from(C::default()).expect("Config serializes to TOML");
        // A default that differs between two calls (a made-up node id) is not fixed.
        let defaults = first
            .into_iter()
            .filter(|(key, value)| second.get(key) == Some(value))
            .collect();
        Self {
            service,
            binary,
            keys,
            defaults,
        }
    }

    /// The default of `key` as `--help` writes it: strings bare (empty: `""`),
    /// lists comma-separated.
    fn plain_default(&self, key: &str) -> String {
        match self.defaults.get(key) {
            None => MADE_UP_ID.to_owned(),
            Some(value) => plain(value),
        }
    }
}

fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn references() -> Vec<Reference> {
    vec![
        Reference::of::<fishchat_access::Config>("access", "fishchat-access"),
        Reference::of::<fishchat_gateway::Config>("gateway", "fishchat-gateway"),
        Reference::of::<fishchat_logic::Config>("logic", "fishchat-logic"),
        Reference::of::<fishchat_manager::Config>("manager", "fishchat-manager"),
        Reference::of::<fishchat_msg_job::Config>("msg_job", "fishchat-msg-job"),
        Reference::of::<fishchat_register::Config>("register", "fishchat-register"),
    ]
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace folder")
        .to_path_buf()
}

fn parse_toml_value(text: &str) -> Option<toml::Value> {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
}

/// Collects failures so that one run names every disagreement.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, service: &str, key: &str, what: impl std::fmt::Display) {
        self.0.push(format!("{service}: key `{key}`: {what}"));
    }

    fn check(self) {
        assert!(
            self.0.is_empty(),
            "the configuration reference disagrees with the code:\n  {}",
            self.0.join("\n  ")
        );
    }
}

/// The help text of each `--option` in `help`, by option name (without `--`).
fn help_blocks(help: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let option = if indent <= 6 && trimmed.starts_with('-') {
            trimmed
                .split([' ', ','])
                .find_map(|word| word.strip_prefix("--"))
                .map(str::to_owned)
        } else {
            None
        };
        match (option, blocks.last_mut()) {
            (Some(name), _) => blocks.push((name, trimmed.to_owned())),
            (None, Some((_, text))) => {
                text.push(' ');
                text.push_str(trimmed);
            }
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn help_lists_every_key_with_its_default() {
    let mut failures = Failures::default();
    for reference in references() {
        let binary = bin_dir().join(reference.binary);
        let output = Command::new(&binary)
            .arg("--help")
            .output()
            .unwrap_or_else(|err| panic!("running {} --help: {err}", binary.display()));
        assert!(
            output.status.success(),
            "{} --help failed",
            reference.binary
        );
        let help = String::from_utf8(output.stdout).expect("help is UTF-8");
        let blocks = help_blocks(&help);
        for key in &reference.keys {
            let option = key.replace('_', "-");
            let Some((_, text)) = blocks.iter().find(|(name, _)| *name == option) else {
                failures.add(
                    reference.service,
                    key,
                    format!("no --{option} in {} --help", reference.binary),
                );
                continue;
            };
            let shown = text
                .split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(default, _)| default.split(", ").next().unwrap_or(default).trim());
            let expected = reference.plain_default(key);
            if shown != Some(expected.as_str()) {
                failures.add(
                    reference.service,
                    key,
                    format!("--help of --{option} shows default {shown:?}, Config::default() has {expected:?}"),
                );
            }
        }
    }
    failures.check();
}

#[test]
fn deploy_local_files_hold_every_key_with_its_default() {
    let mut failures = Failures::default();
    for reference in references() {
        let path = workspace().join(format!("deploy/local/{}.toml", reference.service));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        let file: toml::Table =
            toml::from_str(&text).unwrap_or_else(|err| panic!("parsing {}: {err}", path.display()));
        for key in &reference.keys {
            match (file.get(key), reference.defaults.get(key)) {
                (None, _) => failures.add(
                    reference.service,
                    key,
                    format!("missing from {}", path.display()),
                ),
                (Some(value), Some(default)) if value != default => failures.add(
                    reference.service,
                    key,
                    format!(
                        "{} sets {value}, Config::default() has {default}",
                        path.display()
                    ),
                ),
                // A made-up default: the local file names the node.
                _ => {}
            }
        }
        for key in file.keys().filter(|key| !reference.keys.contains(*key)) {
            failures.add(
                reference.service,
                key,
                format!("in {} but not a key of Config", path.display()),
            );
        }
    }
    failures.check();
}

/// The rows of the first table after the `## <service>` heading: (key, default cell).
fn docs_table(docs: &str, service: &str) -> Option<Vec<(String, String)>> {
    let mut lines = docs.lines().skip_while(|line| {
        line.strip_prefix("## ")
            .and_then(|title| title.split_whitespace().next())
            != Some(service)
    });
    lines.next()?;
    let rows = lines
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1).copied().unwrap_or("").trim_matches('`');
            let default = cells.get(2).copied().unwrap_or("");
            (key.to_owned(), default.to_owned())
        })
        .collect();
    Some(rows)
}

#[test]
fn docs_config_md_lists_every_key_with_its_default() {
    let path = workspace().join("docs/config.md");
    let docs = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let mut failures = Failures::default();
    for reference in references() {
        let Some(rows) = docs_table(&docs, reference.service) else {
            failures.add(
                reference.service,
                "*",
                format!("no `## {}` section in docs/config.md", reference.service),
            );
            continue;
        };
        let listed: BTreeSet<String> = rows.iter().map(|(key, _)| key.clone()).collect();
        for key in reference.keys.difference(&listed) {
            failures.add(reference.service, key, "missing from docs/config.md");
        }
        for key in listed.difference(&reference.keys) {
            failures.add(
                reference.service,
                key,
                "in docs/config.md but not a key of Config",
            );
        }
        for (key, cell) in &rows {
            if !reference.keys.contains(key) {
                continue;
            }
            match reference.defaults.get(key) {
                None if cell.contains(MADE_UP_ID) => {}
                None => failures.add(
                    reference.service,
                    key,
                    format!("docs/config.md shows default {cell}, expected {MADE_UP_ID}"),
                ),
                Some(default) => {
                    let shown = parse_toml_value(cell.trim_matches('`'));
                    if shown.as_ref() != Some(default) {
                        failures.add(
                            reference.service,
                            key,
                            format!(
                                "docs/config.md shows default {cell}, Config::default() has `{default}`"
                            ),
                        );
                    }
                }
            }
        }
    }
    failures.check();
}

/// `Config` loaded from `file` (TOML text) and the command line `args`.
fn load<C, O>(service: &str, file: &str, args: &[&str]) -> C
where
    C: Default + Serialize + DeserializeOwned,
    O: Args + FromArgMatches + Serialize,
{
    let command = O::augment_args(clap::Command::new("fishchat"));
    let matches = command
        .try_get_matches_from(std::iter::once(service).chain(args.iter().copied()))
        .unwrap_or_else(|err| panic!("{service}: parsing {args:?}: {err}"));
    let overrides = O::from_arg_matches(&matches)
        .unwrap_or_else(|err| panic!("{service}: parsing {args:?}: {err}"));
    let dir = std::env::temp_dir().join(format!("fishchat-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join(format!("{service}.toml"));
    std::fs::write(&path, file).expect("writing the file");
    let config = load_config(service, Some(&path), &overrides)
        .unwrap_or_else(|err| panic!("{service}: loading with {args:?}: {err}"));
    let _ = std::fs::remove_file(&path);
    config
}

/// Every service: its `deploy/local` file loads; the command line wins over the file, a key the command line
/// leaves alone keeps the file's value, and a comma-separated list replaces
/// the file's list.
fn command_line_wins<C, O>(service: &str)
where
    C: Default + Serialize + DeserializeOwned,
    O: Args + FromArgMatches + Serialize + Default,
{
    let deploy = workspace().join(format!("deploy/local/{service}.toml"));
    if let Err(err) = load_config::<C>(service, Some(&deploy), &O::default()) {
        panic!("{service}: {} does not load: {err}", deploy.display());
    }
    let file = "grpc_listen = \"127.0.0.1:1111\"\netcd_endpoints = [\"file:2379\"]\n";
    let from_file: C = load::<C, O>(service, file, &[]);
    let from_file = toml::Table::try_from(&from_file).expect("Config serializes");
    assert_eq!(
        from_file["grpc_listen"].as_str(),
        Some("127.0.0.1:1111"),
        "{service}: the file's grpc_listen"
    );
    let overridden: C = load::<C, O>(
        service,
        file,
        &["--etcd-endpoints", "a:2379,b:2379", "--node-id", "cli-node"],
    );
    let overridden = toml::Table::try_from(&overridden).expect("Config serializes");
    assert_eq!(
        overridden["etcd_endpoints"],
        toml::Value::Array(vec!["a:2379".into(), "b:2379".into()]),
        "{service}: --etcd-endpoints replaces the file's list"
    );
    assert_eq!(
        overridden["node_id"].as_str(),
        Some("cli-node"),
        "{service}: --node-id"
    );
    assert_eq!(
        overridden["grpc_listen"].as_str(),
        Some("127.0.0.1:1111"),
        "{service}: a key not on the command line keeps the file's value"
    );
    let overridden: C = load::<C, O>(service, file, &["--grpc-listen", "127.0.0.1:2222"]);
    let overridden = toml::Table::try_from(&overridden).expect("Config serializes");
    assert_eq!(
        overridden["grpc_listen"].as_str(),
        Some("127.0.0.1:2222"),
        "{service}: --grpc-listen wins over the file"
    );
    assert_eq!(
        overridden["etcd_endpoints"],
        toml::Value::Array(vec!["file:2379".into()]),
        "{service}: the file's etcd_endpoints"
    );
}

/// Every service: giving every key on the command line, each with its default,
/// loads `Config::default()`: each option has the key's name and type.
fn every_option_is_a_key<C, O>(reference: &Reference)
where
    C: Default + Serialize + DeserializeOwned,
    O: Args + FromArgMatches + Serialize,
{
    let mut args = Vec::new();
    for key in &reference.keys {
        args.push(format!("--{}", key.replace('_', "-")));
        args.push(match reference.defaults.get(key) {
            None => "cli-node".to_owned(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(value) => plain(value),
        });
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config: C = load::<C, O>(reference.service, "", &args);
    let loaded = toml::Table::try_from(&config).expect("Config serializes");
    for key in &reference.keys {
        let expected = reference
            .defaults
            .get(key)
            .cloned()
            .unwrap_or_else(|| "cli-node".into());
        assert_eq!(
            loaded.get(key),
            Some(&expected),
            "{}: key `{key}` given as --{}",
            reference.service,
            key.replace('_', "-")
        );
    }
}

#[test]
fn command_line_overrides_win_over_the_file() {
    command_line_wins::<fishchat_access::Config, fishchat_access::Overrides>("access");
    command_line_wins::<fishchat_gateway::Config, fishchat_gateway::config::Overrides>("gateway");
    command_line_wins::<fishchat_logic::Config, fishchat_logic::Overrides>("logic");
    command_line_wins::<fishchat_manager::Config, fishchat_manager::Overrides>("manager");
    command_line_wins::<fishchat_msg_job::Config, fishchat_msg_job::config::Overrides>("msg_job");
    command_line_wins::<fishchat_register::Config, fishchat_register::config::Overrides>(
        "register",
    );
}

#[test]
fn every_key_can_be_given_on_the_command_line() {
    let references = references();
    let by_name = |name: &str| {
        references
            .iter()
            .find(|r| r.service == name)
            .expect("a reference per service")
    };
    every_option_is_a_key::<fishchat_access::Config, fishchat_access::Overrides>(by_name("access"));
    every_option_is_a_key::<fishchat_gateway::Config, fishchat_gateway::config::Overrides>(
        by_name("gateway"),
    );
    every_option_is_a_key::<fishchat_logic::Config, fishchat_logic::Overrides>(by_name("logic"));
    every_option_is_a_key::<fishchat_manager::Config, fishchat_manager::Overrides>(by_name(
        "manager",
    ));
    every_option_is_a_key::<fishchat_msg_job::Config, fishchat_msg_job::config::Overrides>(
        by_name("msg_job"),
    );
    every_option_is_a_key::<fishchat_register::Config, fishchat_register::config::Overrides>(
        by_name("register"),
    );
}
