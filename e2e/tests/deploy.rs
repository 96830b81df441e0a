//! The kernel settings file in `deploy/sysctl/`: every key exists on this
//! kernel (a typo would make `sysctl --system` fail on the operator's machine)
//! and every setting says why, in a comment right above it.
#![allow(clippy::unwrap_used)] // a test: a failed step should panic where it happened.

use std::path::Path;

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
