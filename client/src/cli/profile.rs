//! The profile folder: who is logged in on this machine.
//!
//! ```text
//! <home>/profiles/<name>.json   {name, user_id, token, expires_at_ms}
//! <home>/current                the name of the last login (the default identity)
//! <home>/state.json             per (user, device) and conversation, the last seq taken and the
//!                               read position, kept by the client library
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One logged-in identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The user name.
    pub name: String,
    /// The user id.
    pub user_id: u64,
    /// The login token.
    pub token: String,
    /// When the token expires (ms since the Unix epoch).
    pub expires_at_ms: i64,
}

/// The profile folder.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The folder at `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The default folder: `$HOME/.config/fishchat`.
    pub fn default_dir() -> anyhow::Result<PathBuf> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .context("HOME is not set: pass --home or set FISHCHAT_HOME")?;
        Ok(Path::new(&home).join(".config").join("fishchat"))
    }

    /// The state file the client keeps its conversation positions in.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn profiles(&self) -> PathBuf {
        self.dir.join("profiles")
    }

    fn profile_path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let safe = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !safe {
            bail!("{name:?} cannot be stored as a profile name (use letters, digits, - _ .)");
        }
        Ok(self.profiles().join(format!("{name}.json")))
    }

    /// Stores `profile` and makes it the default identity.
    pub fn save(&self, profile: &Profile) -> anyhow::Result<()> {
        let path = self.profile_path(&profile.name)?;
        let json = serde_json::to_vec_pretty(profile)?;
        write_atomically(&path, &json)?;
        write_atomically(&self.dir.join("current"), profile.name.as_bytes())
    }

    /// The profile named `name`, or the last login when `None`.
    pub fn load(&self, name: Option<&str>) -> anyhow::Result<Profile> {
        let name = match name {
            Some(name) => name.to_owned(),
            None => {
                let current = self.dir.join("current");
                match std::fs::read_to_string(&current) {
                    Ok(name) => name.trim().to_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        bail!("nobody is logged in here: run `fishchat login NAME` first")
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("reading {}", current.display()));
                    }
                }
            }
        };
        let path = self.profile_path(&name)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{name} has not logged in here: run `fishchat login {name}`")
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// Every stored profile (for turning names into user ids and back).
    pub fn all(&self) -> anyhow::Result<Vec<Profile>> {
        let dir = self.profiles();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut profiles = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                // A foreign or damaged file in the folder does not stop name lookups.
                if let Ok(profile) = serde_json::from_slice::<Profile>(&bytes) {
                    profiles.push(profile);
                }
            }
        }
        profiles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(profiles)
    }
}

/// Writes `bytes` to a temporary sibling and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, user_id: u64) -> Profile {
        Profile {
            name: name.into(),
            user_id,
            token: format!("tk-{name}"),
            expires_at_ms: 1,
        }
    }

    #[test]
    fn the_last_login_is_the_default_and_others_stay_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("fc"));
        assert!(
            home.load(None)
                .unwrap_err()
                .to_string()
                .contains("fishchat login")
        );
        home.save(&profile("alice", 1)).unwrap();
        home.save(&profile("bob", 2)).unwrap();
        assert_eq!(home.load(None).unwrap(), profile("bob", 2));
        assert_eq!(home.load(Some("alice")).unwrap(), profile("alice", 1));
        let names: Vec<_> = home.all().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(
            home.load(Some("carol"))
                .unwrap_err()
                .to_string()
                .contains("login carol")
        );
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().to_path_buf());
        for name in ["../x", "", ".hidden", "a/b"] {
            assert!(home.save(&profile(name, 1)).is_err(), "{name:?}");
        }
    }
}
