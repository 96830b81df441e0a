//! Turning user names into ids and back, from what this machine knows.
//!
//! The register service has no name lookup route, so names are those of the
//! profiles logged in here; anything else must be given as a numeric id.

use anyhow::bail;

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

    /// The id of `name_or_id`: a number is taken as an id, a name must be known.
    pub fn resolve(&self, name_or_id: &str) -> anyhow::Result<u64> {
        if let Ok(id) = name_or_id.parse() {
            return Ok(id);
        }
        match self.known.iter().find(|(_, name)| name == name_or_id) {
            Some((id, _)) => Ok(*id),
            None => bail!(
                "unknown user {name_or_id:?}: give a numeric user id (only names logged in on this machine are known)"
            ),
        }
    }

    /// The name of `user_id`, or `user N`.
    pub fn name_of(&self, user_id: u64) -> String {
        match self.known.iter().find(|(id, _)| *id == user_id) {
            Some((_, name)) => name.clone(),
            None => format!("user {user_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_ids_and_known_names_resolve() {
        let names = Names::new(vec![(7, "alice".into())]);
        assert_eq!(names.resolve("12").unwrap(), 12);
        assert_eq!(names.resolve("alice").unwrap(), 7);
        assert!(
            names
                .resolve("bob")
                .unwrap_err()
                .to_string()
                .contains("numeric")
        );
        assert_eq!(names.name_of(7), "alice");
        assert_eq!(names.name_of(8), "user 8");
    }
}
