//! Waiting for a condition with a deadline: every phase of a scenario that
//! waits for counters (logins answered, frames arrived, acks in) is bounded,
//! so a lost message or a dead server ends the wait instead of the run.

use std::time::Duration;

use tokio::time::{Instant, sleep};

/// How often the condition is looked at: cheap atomics, so often enough not
/// to add to what is measured.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `done` holds (true) or `deadline` passes (false).
pub async fn until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn true_once_the_condition_holds() {
        let mut looks = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(
            until(deadline, || {
                looks += 1;
                looks == 3
            })
            .await
        );
        assert_eq!(looks, 3);
    }

    #[tokio::test]
    async fn false_at_the_deadline() {
        assert!(!until(Instant::now(), || false).await);
    }
}
