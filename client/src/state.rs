//! What a (user, device) has taken of each conversation, kept in a small JSON
//! file so a restarted process resumes where it stopped instead of replaying
//! its conversations:
//!
//! ```json
//! { "1001/laptop": { "u:1002": { "seq": 17, "read_seq": 15 }, "g:5": { "seq": 3, "read_seq": 3 } } }
//! ```
//!
//! Writes go to a temporary file that is then renamed over the old one, so a
//! crash mid-write leaves either the old or the new content, never half.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::conversation::Conversation;
use crate::error::ClientError;

/// What the file keeps of one conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    /// The last seq the application took, with every seq before it.
    pub(crate) seq: u64,
    /// The read position last heard of.
    pub(crate) read_seq: u64,
}

/// The saved conversations of one (user, device).
pub(crate) type SavedConversations = BTreeMap<Conversation, Saved>;

/// One (user, device) entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    Conversations(SavedConversations),
    /// A per-user inbox seq from before conversations; it means nothing now.
    Inbox(u64),
}

/// One (user, device) entry of a state file.
#[derive(Debug, Clone)]
pub(crate) struct StateFile {
    path: PathBuf,
    key: String,
}

type Entries = BTreeMap<String, Entry>;

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

    /// The saved conversations; empty when this (user, device) has no entry
    /// yet, or only one from before conversations.
    pub(crate) async fn load(&self) -> Result<SavedConversations, ClientError> {
        match self.read_all().await?.remove(&self.key) {
            Some(Entry::Conversations(saved)) => Ok(saved),
            Some(Entry::Inbox(_)) | None => Ok(SavedConversations::new()),
        }
    }

    /// Stores `saved` for this (user, device), keeping the other entries.
    pub(crate) async fn store(&self, saved: &SavedConversations) -> Result<(), ClientError> {
        let mut entries = self.read_all().await?;
        entries.insert(self.key.clone(), Entry::Conversations(saved.clone()));
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

    fn saved(entries: &[(Conversation, u64, u64)]) -> SavedConversations {
        entries
            .iter()
            .map(|&(conversation, seq, read_seq)| (conversation, Saved { seq, read_seq }))
            .collect()
    }

    #[tokio::test]
    async fn entries_are_kept_per_user_and_device_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        let phone = StateFile::new(path.clone(), 7, "phone");
        let laptop = StateFile::new(path.clone(), 7, "laptop");
        assert_eq!(phone.load().await.unwrap(), SavedConversations::new());
        let first = saved(&[(Conversation::User(8), 41, 40)]);
        let second = saved(&[
            (Conversation::User(8), 42, 40),
            (Conversation::Group(5), 3, 1),
        ]);
        let other = saved(&[(Conversation::Group(5), 2, 0)]);
        phone.store(&first).await.unwrap();
        laptop.store(&other).await.unwrap();
        phone.store(&second).await.unwrap();
        let reopened = StateFile::new(path.clone(), 7, "phone");
        assert_eq!(reopened.load().await.unwrap(), second);
        assert_eq!(laptop.load().await.unwrap(), other);
        let empty = StateFile::new(path.clone(), 8, "phone").load().await;
        assert_eq!(empty.unwrap(), SavedConversations::new());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"g:5\""), "{text}");
    }

    #[tokio::test]
    async fn an_entry_from_before_conversations_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, br#"{"7/phone": 41, "7/laptop": 3}"#).unwrap();
        let phone = StateFile::new(path.clone(), 7, "phone");
        assert_eq!(phone.load().await.unwrap(), SavedConversations::new());
        let mine = saved(&[(Conversation::User(8), 1, 0)]);
        phone.store(&mine).await.unwrap();
        assert_eq!(phone.load().await.unwrap(), mine);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for corrupt in [
            &b"{not json"[..],
            br#"{"1/d": {"x:1": {"seq": 1, "read_seq": 0}}}"#,
        ] {
            std::fs::write(&path, corrupt).unwrap();
            let err = StateFile::new(path.clone(), 1, "d")
                .load()
                .await
                .unwrap_err();
            assert!(err.to_string().contains("state.json"), "{err}");
        }
    }
}
