//! Accounts: registration, password checks, refresh tokens and external
//! identities, for the gateway's register, login, refresh and logout.

use std::sync::Arc;

use super::passwords::Passwords;
use super::{Revocation, ServiceError, UserStreams};
use crate::bus::EventBus;
use crate::domain::{UserId, now_ms};
use crate::store::{ChatStore, Rotation, SignIn};

/// Random bytes in a refresh token.
const REFRESH_TOKEN_BYTES: usize = 32;
/// Longest refresh token looked up (ours are 43 characters).
const MAX_REFRESH_TOKEN_CHARS: usize = 128;
/// Longest external issuer and subject accepted, in bytes (the column widths).
pub const MAX_ISSUER_BYTES: usize = 512;
pub const MAX_SUBJECT_BYTES: usize = 255;
/// Longest refresh token lifetime accepted, in seconds (one year).
const MAX_REFRESH_TTL_SECS: u64 = 366 * 24 * 3600;

fn validate_username(username: &str) -> Result<(), ServiceError> {
    let ok = (3..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(
            "username must be 3 to 64 characters of letters, digits, _ . -".into(),
        ))
    }
}

/// A new opaque refresh token: random bytes, base64url without padding.
fn new_refresh_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps of a refresh token: its SHA-256, lowercase hex.
fn refresh_token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The expiry (epoch ms) of a token issued now that lives `ttl_secs`.
fn refresh_expiry(ttl_secs: u64) -> Result<i64, ServiceError> {
    if !(1..=MAX_REFRESH_TTL_SECS).contains(&ttl_secs) {
        return Err(ServiceError::Invalid(format!(
            "ttl_secs must be 1 to {MAX_REFRESH_TTL_SECS}"
        )));
    }
    // In range, so the product fits.
    Ok(now_ms() + (ttl_secs as i64) * 1000)
}

/// The presented refresh token, if it could be one of ours.
fn presented_refresh_token(token: &str) -> Option<&str> {
    (!token.is_empty() && token.len() <= MAX_REFRESH_TOKEN_CHARS).then_some(token)
}

/// A refresh token handed out: the opaque token, its expiry (epoch ms) and
/// the sign-in (family) it belongs to.
#[derive(Debug)]
pub struct IssuedToken {
    pub user_id: UserId,
    pub token: String,
    pub expires_at: i64,
    pub family_id: String,
}

/// Account operations over the store.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn ChatStore>,
    passwords: Arc<Passwords>,
    /// Where revoked sign-ins are announced, so every replica refuses their
    /// access tokens and ends the user's streams.
    bus: Arc<dyn EventBus>,
    /// This replica's streams and revoked sign-ins.
    streams: UserStreams,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn ChatStore>,
        passwords: Arc<Passwords>,
        bus: Arc<dyn EventBus>,
        streams: UserStreams,
    ) -> Self {
        Self {
            store,
            passwords,
            bus,
            streams,
        }
    }

    /// Revokes a sign-in here at once (so the caller's next request is
    /// refused) and on every other replica through the bus.
    async fn sign_out(&self, sign_in: &SignIn, access_ttl_secs: u64) {
        let revocation =
            Revocation::of_sign_in(sign_in.user_id.as_ref(), &sign_in.family_id, access_ttl_secs);
        self.streams.apply(&revocation);
        self.bus.publish_revocation(&revocation.encode()).await;
    }

    /// Creates a user with a valid username and password.
    pub async fn register(&self, username: &str, password: String) -> Result<UserId, ServiceError> {
        validate_username(username)?;
        self.passwords.validate(&password)?;
        let password_hash = self.passwords.hash(password).await?;
        Ok(self.store.create_user(username, &password_hash).await?.id)
    }

    /// The user whose password this is; `None` for a wrong username or
    /// password (both cost the same).
    pub async fn verify_password(
        &self,
        username: &str,
        password: String,
    ) -> Result<Option<UserId>, ServiceError> {
        let user = self.store.find_user(username).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self.passwords.verify(password, stored).await?;
        Ok(user.filter(|_| matches).map(|u| u.id))
    }

    /// A new refresh token of `user_id`, starting a new family.
    pub async fn issue_refresh_token(
        &self,
        user_id: &str,
        ttl_secs: u64,
    ) -> Result<IssuedToken, ServiceError> {
        let expires_at = refresh_expiry(ttl_secs)?;
        let user_id = UserId::parse(user_id)?;
        let token = new_refresh_token();
        let stored = self
            .store
            .issue_refresh_token(&user_id, &refresh_token_hash(&token), expires_at)
            .await?;
        Ok(IssuedToken {
            user_id,
            token,
            expires_at,
            family_id: stored.family_id,
        })
    }

    /// Rotates a live refresh token into a new one of the same family;
    /// `None` when it is malformed, unknown, expired, of a family older than
    /// `family_ttl_secs` (0: no limit), or was already used (then its whole
    /// family is revoked, and its access tokens, which live at most
    /// `access_ttl_secs`, are refused).
    pub async fn rotate_refresh_token(
        &self,
        presented: &str,
        ttl_secs: u64,
        family_ttl_secs: u64,
        access_ttl_secs: u64,
    ) -> Result<Option<IssuedToken>, ServiceError> {
        let expires_at = refresh_expiry(ttl_secs)?;
        // 0 is no limit; a limit past the longest token lifetime is no tighter than it.
        let family_ttl_ms = (family_ttl_secs > 0)
            .then(|| i64::try_from(family_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX));
        let Some(presented) = presented_refresh_token(presented) else {
            return Ok(None);
        };
        let next = new_refresh_token();
        let rotation = self
            .store
            .rotate_refresh_token(
                &refresh_token_hash(presented),
                &refresh_token_hash(&next),
                expires_at,
                family_ttl_ms,
            )
            .await?;
        Ok(match rotation {
            Rotation::Rotated(record) => Some(IssuedToken {
                user_id: record.user_id,
                token: next,
                expires_at: record.expires_at,
                family_id: record.family_id,
            }),
            Rotation::Reused(sign_in) => {
                tracing::warn!(user_id = %sign_in.user_id, "refresh token reused; its family is revoked");
                self.sign_out(&sign_in, access_ttl_secs).await;
                None
            }
            Rotation::Invalid => None,
        })
    }

    /// Revokes the family of a presented refresh token, if it exists: its
    /// access tokens (which live at most `access_ttl_secs`) are refused and
    /// its user's streams end, on every replica.
    pub async fn revoke_refresh_token(
        &self,
        presented: &str,
        access_ttl_secs: u64,
    ) -> Result<(), ServiceError> {
        if let Some(presented) = presented_refresh_token(presented)
            && let Some(sign_in) = self
                .store
                .revoke_refresh_family(&refresh_token_hash(presented))
                .await?
        {
            self.sign_out(&sign_in, access_ttl_secs).await;
        }
        Ok(())
    }

    /// The user of an identity provider's `(issuer, subject)`, created on
    /// first sight; the flag says whether this call created it.
    pub async fn ensure_external_user(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<(UserId, bool), ServiceError> {
        if issuer.is_empty() || issuer.len() > MAX_ISSUER_BYTES {
            return Err(ServiceError::Invalid(format!(
                "issuer must be 1 to {MAX_ISSUER_BYTES} bytes"
            )));
        }
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
            return Err(ServiceError::Invalid(format!(
                "subject must be 1 to {MAX_SUBJECT_BYTES} bytes"
            )));
        }
        let (user_id, created) = self.store.ensure_external_user(issuer, subject).await?;
        if created {
            tracing::info!(%user_id, issuer, "external user created");
        }
        Ok((user_id, created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_and_hashed_to_hex() {
        let (a, b) = (new_refresh_token(), new_refresh_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in base64url without padding");
        let hash = refresh_token_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(
            hash.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            refresh_token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn refresh_lifetimes_are_bounded() {
        assert!(refresh_expiry(0).is_err());
        assert!(refresh_expiry(MAX_REFRESH_TTL_SECS + 1).is_err());
        assert!(refresh_expiry(60).expect("valid") > now_ms());
    }
}
