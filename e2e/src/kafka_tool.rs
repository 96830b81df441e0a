//! Kafka's own command-line tools (`scripts/kafka-tool`), as an operator runs them.
//!
//! Tests use them to prove that what README tells operators to run shows the truth: the group
//! the tools describe, with its committed offsets, end offsets and lag, is the group msg_job uses.

use std::path::PathBuf;
use std::process::Command;

use crate::kafka_brokers;

/// One row of `kafka-consumer-groups --describe`: a partition of a group's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (`None` when nothing is committed: the tool prints `-`).
    pub committed: Option<i64>,
    /// The partition's end offset.
    pub end: i64,
    /// The member consuming it (`None` when the group has no active member).
    pub consumer: Option<String>,
}

/// Runs `scripts/kafka-tool` with `args`; returns its standard output.
///
/// Panics with the tool's error output when it fails, since a test that needs the tools
/// cannot go on without them.
fn run(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-tool");
    let output = Command::new(&script)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scripts/kafka-tool {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The partitions of `group` as `kafka-consumer-groups --describe` reports them, read through
/// Kafka's admin API (ListConsumerGroupOffsets, DescribeGroups and ListOffsets).
pub fn describe_group(group: &str) -> Vec<GroupPartition> {
    let brokers = kafka_brokers();
    let out = run(&[
        "consumer-groups",
        "--bootstrap-server",
        &brokers,
        "--describe",
        "--group",
        group,
    ]);
    parse_describe(group, &out)
}

/// Parses the table of `--describe`: GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG
/// CONSUMER-ID HOST CLIENT-ID, one row per partition, `-` for a missing value.
fn parse_describe(group: &str, out: &str) -> Vec<GroupPartition> {
    let number = |field: &str, line: &str| -> Option<i64> {
        (field != "-").then(|| {
            field
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {field:?} in {line:?}"))
        })
    };
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 7 || fields[0] != group {
                return None;
            }
            Some(GroupPartition {
                topic: fields[1].to_owned(),
                partition: fields[2]
                    .parse()
                    .unwrap_or_else(|_| panic!("bad partition in {line:?}")),
                committed: number(fields[3], line),
                end: number(fields[4], line).unwrap_or_else(|| panic!("no end in {line:?}")),
                consumer: (fields[6] != "-").then(|| fields[6].to_owned()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_describe_table() {
        let out = "\nGROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID\n\
                   g  t  0  10  15  5  rdkafka-1a  /127.0.0.1  rdkafka\n\
                   g  t  1  -  3  -  -  -  -\n\
                   other  t  0  1  1  0  -  -  -\n";
        assert_eq!(
            parse_describe("g", out),
            [
                GroupPartition {
                    topic: "t".into(),
                    partition: 0,
                    committed: Some(10),
                    end: 15,
                    consumer: Some("rdkafka-1a".into()),
                },
                GroupPartition {
                    topic: "t".into(),
                    partition: 1,
                    committed: None,
                    end: 3,
                    consumer: None,
                },
            ]
        );
    }
}
