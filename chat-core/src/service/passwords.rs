//! Password rules and argon2id hashing under a concurrency bound.
//!
//! Each hash needs `ARGON2_MEMORY_KIB` of memory while it runs, so at most
//! `PASSWORD_HASH_CONCURRENCY` run at once (registrations, logins and the
//! dummy check of unknown users alike), each on one of as many dedicated
//! threads that keeps its argon2 memory and reuses it for every hash, and
//! frees it after a few seconds without one. A caller waits up to `PASSWORD_HASH_QUEUE_MS` for
//! a turn, then gets `unavailable` with a retry hint instead of adding to the
//! pile.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use super::ServiceError;

/// What a caller refused for lack of a hashing slot is told to wait.
pub const HASH_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Costs, rules and bounds of [`Passwords`].
#[derive(Clone, Copy, Debug)]
pub struct PasswordPolicy {
    pub min_chars: usize,
    pub max_chars: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Hashes that may run at once.
    pub max_concurrent: usize,
    /// How long a caller waits for a free slot before it is refused.
    pub queue_wait: Duration,
}

/// Password rules and hashing (argon2id with configured costs).
pub struct Passwords {
    params: Params,
    min_chars: usize,
    max_chars: usize,
    /// A hash checked when the user does not exist, so both paths cost the same.
    dummy: String,
    slots: Arc<Semaphore>,
    queue_wait: Duration,
    /// Work for the hashing threads; at most one job per slot is ever queued.
    hashers: Mutex<mpsc::Sender<Job>>,
}

/// One hash to compute on a hashing thread, in that thread's memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

impl Passwords {
    /// Checks the policy, starts the hashing threads and computes the dummy
    /// hash (blocking: run it off the runtime). The threads take their
    /// memory on their first hash, so an idle chat-core holds none.
    pub fn new(policy: PasswordPolicy) -> Result<Self, String> {
        if policy.min_chars == 0 || policy.min_chars > policy.max_chars {
            return Err("password lengths must satisfy 1 <= min <= max".into());
        }
        if policy.max_concurrent == 0 {
            return Err("PASSWORD_HASH_CONCURRENCY must be at least 1".into());
        }
        let params = Params::new(
            policy.argon2_memory_kib,
            policy.argon2_iterations,
            policy.argon2_parallelism,
            None,
        )
        .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        let hashers = start_hashers(policy.max_concurrent, params.block_count())?;
        let mut memory = vec![Block::default(); params.block_count()];
        let dummy = hash_new(&params, "not-a-real-password", &mut memory).map_err(|e| e.to_string())?;
        Ok(Self {
            params,
            min_chars: policy.min_chars,
            max_chars: policy.max_chars,
            dummy,
            slots: Arc::new(Semaphore::new(policy.max_concurrent)),
            queue_wait: policy.queue_wait,
            hashers: Mutex::new(hashers),
        })
    }

    /// Hashes a new password, in turn.
    pub async fn hash(&self, password: String) -> Result<String, ServiceError> {
        let params = self.params.clone();
        self.in_turn(move |memory| hash_new(&params, &password, memory))
            .await?
            .map_err(|e| ServiceError::Internal(e.to_string().into()))
    }

    /// Whether `password` matches the stored hash, in turn. Users without a
    /// usable hash (unknown names, external identities) cost the same as
    /// others and never match.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ServiceError> {
        let usable = stored.filter(|s| PasswordHash::new(s).is_ok());
        let (phc, real) = match usable {
            Some(stored) => (stored, true),
            None => (self.dummy.clone(), false),
        };
        let matches = self
            .in_turn(move |memory| verify_in(&password, &phc, memory))
            .await?;
        Ok(real && matches)
    }

    pub fn validate(&self, password: &str) -> Result<(), ServiceError> {
        let chars = password.chars().count();
        if (self.min_chars..=self.max_chars).contains(&chars) {
            Ok(())
        } else {
            Err(ServiceError::Invalid(format!(
                "password must be {} to {} characters",
                self.min_chars, self.max_chars
            )))
        }
    }

    /// Runs `work` on a hashing thread once a slot is free; refuses when
    /// none frees up within the queue wait.
    async fn in_turn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let permit = tokio::time::timeout(self.queue_wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                metrics::counter!("chat_password_hash_rejected_total").increment(1);
                ServiceError::Overloaded {
                    message: "too many password checks at once; retry shortly",
                    retry_after: HASH_RETRY_AFTER,
                }
            })?
            .map_err(|e| ServiceError::Internal(e.into()))?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _permit = permit;
            let _ = done.send(work(memory));
        });
        self.hashers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| ServiceError::Internal("password hashing threads stopped".into()))?;
        result
            .await
            .map_err(|_| ServiceError::Internal("a password hash was abandoned".into()))
    }
}

// === hashing threads ===

/// How long a hashing thread keeps its argon2 memory without a job; a burst
/// of logins reuses it, an idle chat-core holds none.
const KEEP_MEMORY_WHILE_IDLE: Duration = Duration::from_secs(5);

/// Starts `count` threads, each with `blocks` of argon2 memory of its own,
/// that run hashing jobs until the sender is dropped.
fn start_hashers(count: usize, blocks: usize) -> Result<mpsc::Sender<Job>, String> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for i in 0..count {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("password-hash-{i}"))
            .spawn(move || {
                let mut memory = Vec::new();
                loop {
                    let receiver = receiver.lock().unwrap_or_else(|e| e.into_inner());
                    let job = if memory.is_empty() {
                        receiver.recv().ok()
                    } else {
                        match receiver.recv_timeout(KEEP_MEMORY_WHILE_IDLE) {
                            Ok(job) => Some(job),
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                // No hash for a while: give the memory back.
                                drop(receiver);
                                memory = Vec::new();
                                continue;
                            }
                            Err(mpsc::RecvTimeoutError::Disconnected) => None,
                        }
                    };
                    drop(receiver);
                    let Some(job) = job else { return };
                    if memory.len() != blocks {
                        memory = vec![Block::default(); blocks];
                    }
                    job(&mut memory);
                    // Nothing derived from a password outlives its job.
                    memory.fill(Block::default());
                }
            })
            .map_err(|e| format!("failed to start a password hashing thread: {e}"))?;
    }
    Ok(sender)
}

/// A new argon2id PHC string for `password` with a random salt, computed in `memory`.
fn hash_new(params: &Params, password: &str, memory: &mut Vec<Block>) -> password_hash::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        hash_into(&argon2, password.as_bytes(), salt_bytes, out, memory)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory`.
fn verify_in(password: &str, stored: &str, memory: &mut Vec<Block>) -> bool {
    let mut check = || -> password_hash::Result<bool> {
        let hash = PasswordHash::new(stored)?;
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(hash.algorithm)?;
        let version = hash
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&hash)?;
        let argon2 = Argon2::new(algorithm, version, params);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let computed = Output::init_with(expected.len(), |out| {
            hash_into(&argon2, password.as_bytes(), salt_bytes, out, memory)
        })?;
        // `Output` compares in constant time.
        Ok(computed == expected)
    };
    check().unwrap_or(false)
}

/// Runs argon2 in `memory`, growing it for a stored hash of higher cost
/// (and giving the extra back afterwards).
fn hash_into(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> password_hash::Result<()> {
    let own = memory.len();
    let needed = argon2.params().block_count();
    if needed > own {
        memory.resize(needed, Block::default());
    }
    let result = argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..needed]);
    if memory.len() > own {
        memory.truncate(own);
        memory.shrink_to_fit();
    }
    result.map_err(password_hash::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `password` matches the `stored` hash.
    async fn verifies(passwords: &Passwords, password: &str, stored: &str) -> bool {
        passwords
            .verify(password.into(), Some(stored.into()))
            .await
            .expect("verify")
    }

    fn passwords(max_concurrent: usize, queue_wait: Duration) -> Passwords {
        Passwords::new(PasswordPolicy {
            min_chars: 1,
            max_chars: 64,
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            max_concurrent,
            queue_wait,
        })
        .expect("valid policy")
    }

    #[tokio::test]
    async fn a_caller_without_a_free_slot_is_refused_after_the_queue_wait() {
        let passwords = passwords(1, Duration::from_millis(20));
        let held = passwords.slots.clone().acquire_owned().await.expect("slot");
        let refused = passwords.verify("pw".into(), None).await.expect_err("no slot");
        assert!(matches!(refused, ServiceError::Overloaded { .. }), "{refused:?}");
        drop(held);
        assert!(!passwords.verify("pw".into(), None).await.expect("a slot is free"));
    }

    #[tokio::test]
    async fn hashes_verify_in_turn() {
        let passwords = passwords(2, Duration::from_secs(5));
        let hash = passwords.hash("secret".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(verifies(&passwords, "secret", &hash).await);
        assert!(!verifies(&passwords, "wrong", &hash).await);
        assert!(!verifies(&passwords, "secret", "").await);
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_still_verify() {
        use argon2::password_hash::PasswordHasher;
        let passwords = passwords(1, Duration::from_secs(5));
        // Another cost than the policy's: the thread's memory grows for it.
        let params = Params::new(2048, 2, 1, None).expect("params");
        let salt = SaltString::generate(&mut OsRng);
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"older", &salt)
            .expect("hash")
            .to_string();
        assert!(verifies(&passwords, "older", &stored).await);
        assert!(!verifies(&passwords, "newer", &stored).await);
    }
}
