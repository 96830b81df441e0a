//! Turning user names into ids and back: the profiles logged in here are
//! known at once; any other name is looked up on the register service
//! (`GET /users/{name}`) and remembered for the session.

use anyhow::{Context, bail};
use fishchat_client::register::RegisterApi;

/// Known (user id, name) pairs.
#[derive(Debug, Clone, Default)]
pub struct Names {
    known: Vec<(u64, String)>,
}

impl Names {
    /// Names from (id, name) pairs.
    pub fn new(known: Vec<(u64, String)>) -> Self {
        Self { known }
    }

    /// The id of `name_or_id` without asking anyone: a number is an id, else a known name.
    pub fn known_id(&self, name_or_id: &str) -> Option<u64> {
        if let Ok(id) = name_or_id.parse() {
            return Some(id);
        }
        self.known
            .iter()
            .find(|(_, name)| name == name_or_id)
            .map(|(id, _)| *id)
    }

    /// The id of `name_or_id`: a number is an id; a name not known here is
    /// looked up on the register service as `token`'s user.
    pub async fn resolve(
        &mut self,
        api: &RegisterApi,
        token: &str,
        name_or_id: &str,
    ) -> anyhow::Result<u64> {
        if let Some(id) = self.known_id(name_or_id) {
            return Ok(id);
        }
        let user = match api.user_by_name(token, name_or_id).await {
            Ok(user) => user,
            Err(err) if err.status() == Some(404) => bail!("no user named {name_or_id:?}"),
            Err(err) => {
                return Err(err).with_context(|| format!("looking up user {name_or_id:?}"));
            }
        };
        self.known.push((user.user_id, user.name));
        Ok(user.user_id)
    }

    /// The name of `user_id`, when known.
    pub fn known_name(&self, user_id: u64) -> Option<&str> {
        self.known
            .iter()
            .find(|(id, _)| *id == user_id)
            .map(|(_, name)| name.as_str())
    }

    /// The name of `user_id`, or `user N`.
    pub fn name_of(&self, user_id: u64) -> String {
        match self.known_name(user_id) {
            Some(name) => name.to_owned(),
            None => format!("user {user_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_ids_and_known_names_resolve_without_asking() {
        let names = Names::new(vec![(7, "alice".into())]);
        assert_eq!(names.known_id("12"), Some(12));
        assert_eq!(names.known_id("alice"), Some(7));
        assert_eq!(names.known_id("bob"), None);
        assert_eq!(names.name_of(7), "alice");
        assert_eq!(names.name_of(8), "user 8");
    }

    #[tokio::test]
    async fn unknown_names_are_looked_up_and_an_unreachable_register_says_so() {
        let mut names = Names::new(Vec::new());
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let api = RegisterApi::new("http://127.0.0.1:1");
        let err = names.resolve(&api, "tk", "carol").await.unwrap_err();
        assert!(
            format!("{err:#}").contains("looking up user \"carol\""),
            "{err:#}"
        );
        assert_eq!(names.resolve(&api, "tk", "42").await.unwrap(), 42);
    }
}
