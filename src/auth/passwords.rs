//! argon2id hashing on a pool of threads of its own (`SyncArbiter`): hashing costs
//! tens of milliseconds of CPU, which must not stall HTTP workers or other auth work.

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use prometheus::IntCounterVec;

use crate::config::PasswordHashSettings;
use crate::domain::password::Password;

/// Hashing failed (bad parameters, a corrupt stored hash, or a panic in the hasher), or
/// the hasher pool is not running.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Failed(String),
    #[error("the password hasher is not running")]
    Gone,
}

/// Hashes `password` on the hasher pool.
pub async fn hash_password(
    hasher: &Addr<PasswordHasher>,
    password: Password,
) -> Result<String, HashError> {
    hasher
        .send(HashPassword(password))
        .await
        .map_err(|_| HashError::Gone)?
}

/// Checks `password` against `hash` on the hasher pool (see [`VerifyPassword`]).
pub async fn verify_password(
    hasher: &Addr<PasswordHasher>,
    hash: Option<String>,
    password: String,
) -> Result<bool, HashError> {
    hasher
        .send(VerifyPassword { hash, password })
        .await
        .map_err(|_| HashError::Gone)?
}

/// One hashing thread.
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// Counts runs by operation, in the server's pool (see [`Self::start_pool`]).
    runs: Option<IntCounterVec>,
}

impl PasswordHasher {
    pub fn new(settings: &PasswordHashSettings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|err| HashError::Failed(err.to_string()))?;
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            runs: None,
        })
    }

    /// Starts `threads` hashers, counting their runs in `runs` by operation.
    pub fn start_pool(
        threads: usize,
        settings: &PasswordHashSettings,
        runs: IntCounterVec,
    ) -> Result<Addr<Self>, HashError> {
        Self::new(settings)?;
        let settings = settings.clone();
        Ok(SyncArbiter::start(threads.max(1), move || Self {
            runs: Some(runs.clone()),
            ..Self::new(&settings).expect("parameters were checked above")
        }))
    }

    fn count(&self, operation: &str) {
        if let Some(runs) = &self.runs {
            runs.with_label_values(&[operation]).inc();
        }
    }

    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|err| HashError::Failed(err.to_string()))
    }

    /// Checks `password` against a stored PHC string; the stored hash's own parameters
    /// apply, so raising the cost later keeps old hashes valid.
    pub fn verify(&self, hash: &str, password: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(hash).map_err(|err| HashError::Failed(err.to_string()))?;
        Ok(self
            .argon2
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    }
}

impl Actor for PasswordHasher {
    type Context = SyncContext<Self>;
}

/// Sync actors are not supervised; a panic would end the thread, so it becomes an error.
fn contained<T>(work: impl FnOnce() -> Result<T, HashError>) -> Result<T, HashError> {
    catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(HashError::Failed("the hasher panicked".into())))
}

#[derive(Message)]
#[rtype(result = "Result<String, HashError>")]
pub struct HashPassword(pub Password);

impl Handler<HashPassword> for PasswordHasher {
    type Result = Result<String, HashError>;

    fn handle(&mut self, msg: HashPassword, _: &mut SyncContext<Self>) -> Self::Result {
        self.count("hash");
        contained(|| self.hash(msg.0.expose()))
    }
}

/// Verifies a password; with `hash: None` it burns the same time and answers false, so
/// that unknown accounts cannot be told apart by timing.
#[derive(Message)]
#[rtype(result = "Result<bool, HashError>")]
pub struct VerifyPassword {
    pub hash: Option<String>,
    pub password: String,
}

impl Handler<VerifyPassword> for PasswordHasher {
    type Result = Result<bool, HashError>;

    fn handle(&mut self, msg: VerifyPassword, _: &mut SyncContext<Self>) -> Self::Result {
        self.count("verify");
        contained(|| match &msg.hash {
            Some(hash) => self.verify(hash, &msg.password),
            None => {
                self.hash(&msg.password)?;
                Ok(false)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHashSettings {
        PasswordHashSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            workers: 1,
        }
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verifiable() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        let first = hasher.hash("correct horse battery").unwrap();
        let second = hasher.hash("correct horse battery").unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(hasher.verify(&first, "correct horse battery").unwrap());
        assert!(!hasher.verify(&first, "wrong horse battery").unwrap());
        assert!(hasher.verify("not a phc string", "x").is_err());
    }

    #[test]
    fn hashes_made_with_other_costs_still_verify() {
        let old = PasswordHasher::new(&cheap())
            .unwrap()
            .hash("pw-12345678")
            .unwrap();
        let mut stronger = cheap();
        stronger.memory_kib = 128;
        stronger.iterations = 2;
        assert!(PasswordHasher::new(&stronger)
            .unwrap()
            .verify(&old, "pw-12345678")
            .unwrap());
    }
}
