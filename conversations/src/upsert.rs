//! Many upserts in one round trip: MongoDB's `update` command with one
//! statement per document, unordered, so a refused statement does not hold
//! back the others.
//!
//! The driver's `update_one` costs a round trip per document, and its
//! `bulk_write` needs the `bulkWrite` command of MongoDB 8.0, so the command
//! goes through `run_command`. That path skips two things the driver's own
//! write helpers do, and this module does them instead:
//!
//! * it sends the collection's write concern, which `run_command` would not
//!   apply;
//! * it reads the reply. `ok: 1` only says the command ran: the statements
//!   the server refused are listed in `writeErrors`, and a write concern it
//!   could not satisfy in `writeConcernError`. The count of matched or
//!   inserted documents (`n`) must account for every other statement, so a
//!   statement the server silently skipped is an error too.

use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};

use crate::error::{ConvError, DUPLICATE_KEY, WriteProblem};
use crate::store::ConversationStore;

/// Statements per command. A head or member upsert takes under 200 bytes, so
/// a command stays near 100 KB, far below the 16 MB a command may take.
pub(crate) const MAX_STATEMENTS: usize = 500;

/// One upsert: the document `filter` matches gets `update`; when none
/// matches, a document made of the filter's equalities and `update` is inserted.
#[derive(Debug, Clone)]
pub(crate) struct Upsert {
    pub(crate) filter: Document,
    pub(crate) update: Document,
}

/// A statement the server refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Where the statement is in the list given to [`ConversationStore::upsert_all`].
    pub(crate) index: usize,
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Refusal {
    /// Whether another writer inserted the document between the statement's
    /// match and its insert.
    pub(crate) fn is_race(&self) -> bool {
        self.code == DUPLICATE_KEY
    }
}

impl ConversationStore {
    /// Applies `upserts` to `collection`, [`MAX_STATEMENTS`] per command, and
    /// returns the ones the server refused; all others were applied. A
    /// command that failed as a whole, an unsatisfied write concern or an
    /// unreadable reply is the error (statements of earlier commands, and
    /// possibly of the failed one, stay applied).
    pub(crate) async fn upsert_all(
        &self,
        collection: &Collection<Document>,
        upserts: &[Upsert],
    ) -> Result<Vec<Refusal>, ConvError> {
        let mut refused = Vec::new();
        for (n, chunk) in upserts.chunks(MAX_STATEMENTS).enumerate() {
            let reply = self
                .database
                .run_command(command(collection, chunk)?)
                .await?;
            let offset = n * MAX_STATEMENTS;
            let found = refusals(&reply, chunk.len()).map_err(|problem| ConvError::Write {
                collection: collection.name().to_owned(),
                problem,
            })?;
            refused.extend(found.into_iter().map(|r| Refusal {
                index: offset + r.index,
                ..r
            }));
        }
        Ok(refused)
    }
}

/// The error for `refused` statements of `upserts` (not empty): it names how
/// many failed and the first that failed for another reason than a race, if any.
pub(crate) fn refused_error(
    collection: &str,
    upserts: &[Upsert],
    refused: &[Refusal],
) -> ConvError {
    let first = refused
        .iter()
        .find(|r| !r.is_race())
        .or_else(|| refused.first());
    let problem = match first {
        Some(first) => WriteProblem::Refused {
            statements: upserts.len(),
            refused: refused.len(),
            filter: upserts
                .get(first.index)
                .map_or_else(String::new, |u| u.filter.to_string()),
            code: first.code,
            message: first.message.clone(),
        },
        None => WriteProblem::Unreadable("refused statements expected, none given".to_owned()),
    };
    ConvError::Write {
        collection: collection.to_owned(),
        problem,
    }
}

/// The `update` command for `chunk`: unordered, because the statements are
/// independent and one refused must not leave the others unapplied.
fn command(collection: &Collection<Document>, chunk: &[Upsert]) -> Result<Document, ConvError> {
    let updates: Vec<Document> = chunk
        .iter()
        .map(|u| doc! { "q": u.filter.clone(), "u": u.update.clone(), "upsert": true })
        .collect();
    let mut command = doc! { "update": collection.name(), "updates": updates, "ordered": false };
    if let Some(concern) = collection.write_concern() {
        let concern = mongodb::bson::to_bson(concern).map_err(mongodb::error::Error::from)?;
        command.insert("writeConcern", concern);
    }
    Ok(command)
}

/// The statements an `update` reply for `statements` statements lists as
/// refused (indexes into the command's statements).
fn refusals(reply: &Document, statements: usize) -> Result<Vec<Refusal>, WriteProblem> {
    if let Some(concern) = reply.get("writeConcernError") {
        let concern = concern
            .as_document()
            .ok_or_else(|| unreadable("writeConcernError is not a document"))?;
        return Err(WriteProblem::Concern {
            code: code(concern)?,
            message: message(concern),
        });
    }
    let refused: Vec<Refusal> = match reply.get("writeErrors") {
        None => Vec::new(),
        Some(Bson::Array(errors)) => errors
            .iter()
            .map(|error| refusal(error, statements))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(unreadable("writeErrors is not an array")),
    };
    let applied = count(reply, "n")?;
    if applied.checked_add(refused.len()) != Some(statements) {
        return Err(unreadable(format!(
            "n is {applied} for {statements} upserts of which {} were refused",
            refused.len()
        )));
    }
    Ok(refused)
}

/// One entry of `writeErrors`.
fn refusal(error: &Bson, statements: usize) -> Result<Refusal, WriteProblem> {
    let error = error
        .as_document()
        .ok_or_else(|| unreadable("a writeErrors entry is not a document"))?;
    let index = count(error, "index")?;
    if index >= statements {
        return Err(unreadable(format!(
            "writeErrors names statement {index} of {statements}"
        )));
    }
    Ok(Refusal {
        index,
        code: code(error)?,
        message: message(error),
    })
}

fn code(error: &Document) -> Result<i32, WriteProblem> {
    match error.get("code") {
        Some(&Bson::Int32(code)) => Ok(code),
        Some(&Bson::Int64(code)) => {
            i32::try_from(code).map_err(|_| unreadable(format!("error code {code} out of range")))
        }
        _ => Err(unreadable("an error without an integer code")),
    }
}

/// The server's text for an error; it is informative only, so a missing one is empty.
fn message(error: &Document) -> String {
    error.get_str("errmsg").unwrap_or_default().to_owned()
}

/// A non-negative integer field.
fn count(doc: &Document, field: &str) -> Result<usize, WriteProblem> {
    let value = match doc.get(field) {
        Some(&Bson::Int32(v)) => usize::try_from(v).ok(),
        Some(&Bson::Int64(v)) => usize::try_from(v).ok(),
        _ => None,
    };
    value.ok_or_else(|| unreadable(format!("{field} is missing or not a count")))
}

fn unreadable(reason: impl Into<String>) -> WriteProblem {
    WriteProblem::Unreadable(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_without_errors_refuses_nothing() {
        let reply =
            doc! { "n": 3, "nModified": 1, "upserted": [{ "index": 0, "_id": "g:1" }], "ok": 1.0 };
        assert_eq!(refusals(&reply, 3), Ok(Vec::new()));
    }

    #[test]
    fn write_errors_are_listed_even_though_ok_is_1() {
        let reply = doc! {
            "n": 1_i64,
            "writeErrors": [
                { "index": 2, "code": 11000, "errmsg": "E11000 duplicate key" },
                { "index": 0_i64, "code": 121_i64 },
            ],
            "ok": 1.0,
        };
        assert_eq!(
            refusals(&reply, 3),
            Ok(vec![
                Refusal {
                    index: 2,
                    code: 11000,
                    message: "E11000 duplicate key".to_owned()
                },
                Refusal {
                    index: 0,
                    code: 121,
                    message: String::new()
                },
            ])
        );
    }

    #[test]
    fn a_write_concern_error_fails_the_command() {
        let reply = doc! {
            "n": 2,
            "writeConcernError": { "code": 64, "errmsg": "waiting for replication timed out" },
            "ok": 1.0,
        };
        assert_eq!(
            refusals(&reply, 2),
            Err(WriteProblem::Concern {
                code: 64,
                message: "waiting for replication timed out".to_owned()
            })
        );
    }

    #[test]
    fn an_unaccounted_statement_or_a_malformed_reply_is_unreadable() {
        let replies = [
            doc! { "n": 1, "ok": 1.0 },
            doc! { "ok": 1.0 },
            doc! { "n": 0, "writeErrors": { "index": 0, "code": 2 }, "ok": 1.0 },
            doc! { "n": 1, "writeErrors": [{ "index": 2, "code": 2 }], "ok": 1.0 },
            doc! { "n": 1, "writeErrors": [{ "index": -1, "code": 2 }], "ok": 1.0 },
            doc! { "n": 1, "writeErrors": [{ "index": 1, "code": "x" }], "ok": 1.0 },
            doc! { "n": 1, "writeErrors": [{ "index": 1, "code": 1_i64 << 40 }], "ok": 1.0 },
            doc! { "n": 1, "writeErrors": ["x"], "ok": 1.0 },
            doc! { "n": 2, "writeConcernError": "x", "ok": 1.0 },
        ];
        for reply in replies {
            assert!(
                matches!(refusals(&reply, 2), Err(WriteProblem::Unreadable(_))),
                "{reply}"
            );
        }
    }

    #[test]
    fn the_error_names_the_first_refusal_that_is_not_a_race() {
        let upserts: Vec<Upsert> = (1..=3)
            .map(|i| Upsert {
                filter: doc! { "_id": format!("g:{i}") },
                update: doc! { "$max": { "head": 1_i64 } },
            })
            .collect();
        let refused = [
            Refusal {
                index: 0,
                code: DUPLICATE_KEY,
                message: "dup".to_owned(),
            },
            Refusal {
                index: 2,
                code: 121,
                message: "Document failed validation".to_owned(),
            },
        ];
        let err = refused_error("heads", &upserts, &refused);
        assert_eq!(
            err.to_string(),
            r#"writing to heads: 2 of 3 upserts refused; the first on { "_id": "g:3" }: code 121: Document failed validation"#
        );
    }
}
