//! Health that follows a service's real dependencies: the servers it cannot
//! serve without (Redis, the MongoDB server, Kafka) are checked every few
//! seconds, and the service reports NOT_SERVING while any of them does not
//! answer, so a load balancer or an operator's probe sees the outage instead
//! of a status set once at start.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How long one check may take before it counts as failed.
pub const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(2);

/// How often services check their dependencies.
pub const DEPENDENCY_CHECKS: Duration = Duration::from_secs(5);

type Check = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A server the service needs, and how to ask it whether it answers.
pub struct Dependency {
    name: &'static str,
    check: Box<dyn Fn() -> Check + Send + Sync>,
}

impl Dependency {
    /// `check` asks the server something cheap (a PING, a metadata request)
    /// through a clone of `client` and fails with the reason when it does
    /// not answer.
    pub fn new<C, F, Fut, E>(name: &'static str, client: C, check: F) -> Self
    where
        C: Clone + Send + Sync + 'static,
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        Self {
            name,
            check: Box::new(move || {
                let answer = check(client.clone());
                Box::pin(async move { answer.await.map_err(|err| err.to_string()) })
            }),
        }
    }
}

/// The status a round of checks gives, and the failures that decided it
/// (`name: reason`).
fn verdict(results: Vec<(&'static str, Result<(), String>)>) -> (ServingStatus, Vec<String>) {
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|reason| format!("{name}: {reason}")))
        .collect();
    let status = if failures.is_empty() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    (status, failures)
}

/// Checks every dependency each `every` (the first round at once) and sets
/// the overall status and each of `services` to SERVING while all answer,
/// NOT_SERVING while any does not. Logs each change with its reasons.
pub fn follow(
    reporter: HealthReporter,
    services: &[&'static str],
    dependencies: Vec<Dependency>,
    every: Duration,
) -> JoinHandle<()> {
    let services = services.to_vec();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            ticks.tick().await;
            let results = futures::future::join_all(dependencies.iter().map(|d| async {
                let answer = tokio::time::timeout(DEPENDENCY_TIMEOUT.min(every), (d.check)()).await;
                (
                    d.name,
                    answer.unwrap_or_else(|_| Err("no answer in time".to_owned())),
                )
            }))
            .await;
            let (status, failures) = verdict(results);
            if last == Some(status) {
                continue;
            }
            if failures.is_empty() {
                tracing::info!("every dependency answers: serving");
            } else {
                tracing::warn!(failures = ?failures, "a dependency does not answer: not serving");
            }
            for service in std::iter::once("").chain(services.iter().copied()) {
                reporter.set_service_status(service, status).await;
            }
            last = Some(status);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_is_enough_to_stop_serving_and_is_named() {
        let (status, failures) = verdict(vec![("redis", Ok(())), ("kafka", Ok(()))]);
        assert_eq!((status, failures.len()), (ServingStatus::Serving, 0));
        let (status, failures) = verdict(vec![
            ("redis", Ok(())),
            ("kafka", Err("connection refused".to_owned())),
        ]);
        assert_eq!(status, ServingStatus::NotServing);
        assert_eq!(failures, ["kafka: connection refused"]);
        assert_eq!(verdict(Vec::new()).0, ServingStatus::Serving);
    }
}
