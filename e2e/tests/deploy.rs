//! The files in `deploy/`. The kernel settings file in `deploy/sysctl/`: every
//! key exists on this kernel (a typo would make `sysctl --system` fail on the
//! operator's machine) and every setting says why, in a comment right above it.
//! The systemd units in `deploy/systemd/`: `systemd-analyze security` rates
//! every one at most 3.0 (of 10, lower is safer), so a unit that loses its
//! hardening block, or a new unit without it, fails here.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::path::Path;
use std::process::Command;

#[test]
fn every_sysctl_setting_exists_and_says_why() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sysctl/99-fishchat.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut settings = 0;
    let mut previous = "";
    for line in text.lines() {
        if !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key = value: {line:?}"));
            let key = key.trim();
            assert!(!value.trim().is_empty(), "{key} has no value");
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            assert!(path.exists(), "{key} is not a setting of this kernel");
            assert!(
                previous.starts_with('#'),
                "{key} has no comment right above it"
            );
            settings += 1;
        }
        previous = line;
    }
    assert!(settings >= 5, "only {settings} settings read");
}

#[test]
fn every_unit_is_hardened_to_at_most_3() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let mut units: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "service"))
        .collect();
    units.sort();
    assert_eq!(units.len(), 6, "expected the six service units: {units:?}");
    for unit in &units {
        let name = unit.file_name().unwrap().to_string_lossy();
        // --threshold is on the 0-100 scale: 30 fails above an exposure of 3.0.
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=30"])
            .arg(unit)
            .output()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run systemd-analyze ({err}): install the `systemd` package \
                     (apt-get install systemd)"
                )
            });
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{name}: systemd-analyze security failed ({}), exposure above 3.0?\n{stdout}{stderr}",
            output.status
        );
        let exposure: f64 = stdout
            .lines()
            .find_map(|line| line.split_once("Overall exposure level for "))
            .and_then(|(_, rest)| rest.split_once(": "))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{name}: no overall exposure level in\n{stdout}{stderr}"))
            .parse()
            .unwrap_or_else(|err| panic!("{name}: exposure level is not a number ({err})"));
        assert!(
            exposure <= 3.0,
            "{name}: exposure {exposure} is above 3.0\n{stdout}"
        );
    }
}
