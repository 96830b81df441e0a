//! The last seen seq per (user, device), kept in a small JSON file so a
//! restarted process resumes where it stopped instead of replaying its inbox.
//!
//! Writes go to a temporary file that is then renamed over the old one, so a
//! crash mid-write leaves either the old or the new content, never half.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ClientError;

/// One (user, device) entry of a state file.
#[derive(Debug, Clone)]
pub(crate) struct StateFile {
    path: PathBuf,
    key: String,
}

type Entries = BTreeMap<String, u64>;

impl StateFile {
    /// The entry of `user_id` on `device_id` in the file at `path`.
    pub(crate) fn new(path: PathBuf, user_id: u64, device_id: &str) -> Self {
        Self {
            path,
            key: format!("{user_id}/{device_id}"),
        }
    }

    fn error(&self, message: impl ToString) -> ClientError {
        ClientError::StateFile {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    async fn read_all(&self) -> Result<Entries, ClientError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.error(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Entries::new()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The stored last seen seq; `None` when this (user, device) has no entry yet.
    pub(crate) async fn load(&self) -> Result<Option<u64>, ClientError> {
        Ok(self.read_all().await?.get(&self.key).copied())
    }

    /// Stores `seq` as the last seen seq, keeping the other entries.
    pub(crate) async fn store(&self, seq: u64) -> Result<(), ClientError> {
        let mut entries = self.read_all().await?;
        entries.insert(self.key.clone(), seq);
        let json = serde_json::to_vec_pretty(&entries).map_err(|e| self.error(e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.error(e))?;
        }
        let tmp = temp_path(&self.path);
        tokio::fs::write(&tmp, json)
            .await
            .map_err(|e| self.error(e))?;
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(|e| self.error(e))
    }
}

/// A sibling of `path` unique to this process, so two processes sharing a
/// state file never write into each other's temporary file.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_kept_per_user_and_device_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        let phone = StateFile::new(path.clone(), 7, "phone");
        let laptop = StateFile::new(path.clone(), 7, "laptop");
        assert_eq!(phone.load().await.unwrap(), None);
        phone.store(41).await.unwrap();
        laptop.store(3).await.unwrap();
        phone.store(42).await.unwrap();
        let reopened = StateFile::new(path.clone(), 7, "phone");
        assert_eq!(reopened.load().await.unwrap(), Some(42));
        assert_eq!(laptop.load().await.unwrap(), Some(3));
        assert_eq!(StateFile::new(path, 8, "phone").load().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = StateFile::new(path, 1, "d").load().await.unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
