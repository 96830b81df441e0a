//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow (tens of milliseconds, ~19 MiB), so it runs
//! on tokio's blocking pool and never on a worker that serves other requests.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use rand::TryRngCore;
use rand::rngs::OsRng;

use crate::error::Error;

/// Hashes and checks passwords with one set of argon2 parameters.
#[derive(Debug, Clone)]
pub struct Passwords {
    params: Params,
}

impl Default for Passwords {
    /// argon2id with the crate's default (OWASP-recommended) parameters.
    fn default() -> Self {
        Self {
            params: Params::default(),
        }
    }
}

impl Passwords {
    /// Hashing with `params` (tests use cheap ones to stay fast in debug builds).
    pub fn with_params(params: Params) -> Self {
        Self { params }
    }

    /// The PHC string (`$argon2id$v=19$...`) of `password` under a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let params = self.params.clone();
        run_blocking(move || {
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
        run_blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|err| Error::Internal(format!("stored hash does not parse: {err}")))?;
            Ok(argon(params)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }
}

fn argon(params: Params) -> Argon2<'static> {
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::Internal(format!("password worker failed: {err}")))?
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

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let passwords = cheap();
        let a = passwords.hash("pw".into()).await.expect("hash");
        let b = passwords.hash("pw".into()).await.expect("hash");
        assert_ne!(a, b);
    }
}
