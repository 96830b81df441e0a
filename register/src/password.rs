//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow (tens of milliseconds, ~19 MiB), so it runs
//! on tokio's blocking pool and never on a worker that serves other requests.
//! At most a fixed number of hashes run at once (by default one per core):
//! a flood of logins then waits its turn instead of taking ~19 MiB per
//! request in flight, so the memory hashing can take is bounded.

use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use rand::TryRngCore;
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::metrics::Metrics;

/// Hashes and checks passwords with one set of argon2 parameters; clones
/// share the cap on hashes at once.
#[derive(Debug, Clone)]
pub struct Passwords {
    params: Params,
    running: Arc<Semaphore>,
    metrics: Metrics,
}

impl Default for Passwords {
    /// argon2id with the crate's default (OWASP-recommended) parameters.
    fn default() -> Self {
        Self::with_params(Params::default())
    }
}

impl Passwords {
    /// Hashing with `params` (tests use cheap ones to stay fast in debug
    /// builds), one hash at a time per core.
    pub fn with_params(params: Params) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_limit(params, cores)
    }

    /// Hashing with `params`, at most `max_at_once` hashes at a time (at least one).
    pub fn with_limit(params: Params, max_at_once: usize) -> Self {
        Self {
            params,
            running: Arc::new(Semaphore::new(max_at_once.max(1))),
            metrics: Metrics::default(),
        }
    }

    /// Reports the queue and the time per hash in `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self { metrics, ..self }
    }

    /// The PHC string (`$argon2id$v=19$...`) of `password` under a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let params = self.params.clone();
        self.run_blocking(move || {
            let mut salt = [0u8; 16];
            OsRng
                .try_fill_bytes(&mut salt)
                .map_err(|err| Error::Internal(format!("no OS randomness for a salt: {err}")))?;
            let salt = SaltString::encode_b64(&salt)
                .map_err(|err| Error::Internal(format!("salt encoding: {err}")))?;
            argon(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|err| Error::Internal(format!("password hashing: {err}")))
        })
        .await
    }

    /// Whether `password` matches the stored PHC string `hash`.
    ///
    /// The parameters come from the stored hash, so hashes made with older
    /// parameters keep verifying.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, Error> {
        let params = self.params.clone();
        self.run_blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|err| Error::Internal(format!("stored hash does not parse: {err}")))?;
            Ok(argon(params)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    /// Runs `work` on the blocking pool once fewer than the cap are running.
    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.metrics.hash_waiting.inc();
        let turn = self.running.acquire().await;
        self.metrics.hash_waiting.dec();
        let _turn =
            turn.map_err(|err| Error::Internal(format!("password workers closed: {err}")))?;
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|err| Error::Internal(format!("password worker failed: {err}")))?;
        self.metrics
            .hash_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

fn argon(params: Params) -> Argon2<'static> {
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::with_params(Params::new(1024, 1, 1, None).expect("valid params"))
    }

    #[tokio::test]
    async fn hash_verifies_only_its_password() {
        let passwords = cheap();
        let hash = passwords.hash("hunter2".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("hunter2"));
        assert!(
            passwords
                .verify("hunter2".into(), hash.clone())
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("hunter3".into(), hash)
                .await
                .expect("verify")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_more_hashes_run_at_once_than_the_cap() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let passwords = Passwords::with_limit(Params::new(1024, 1, 1, None).expect("params"), 2);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let works = (0..8).map(|_| {
            let (running, peak) = (running.clone(), peak.clone());
            passwords.run_blocking(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Held until two have run together (bounded), so that the
                // others try to start meanwhile and only the cap stops them.
                let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while peak.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < until {
                    std::thread::yield_now();
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        });
        for done in futures::future::join_all(works).await {
            done.expect("work");
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak} ran at once");
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let passwords = cheap();
        let a = passwords.hash("pw".into()).await.expect("hash");
        let b = passwords.hash("pw".into()).await.expect("hash");
        assert_ne!(a, b);
    }
}
