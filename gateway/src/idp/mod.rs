//! External identity providers: user tokens signed (RS256/ES256) by a
//! configured issuer, checked for issuer, audience, expiry and not-before,
//! and mapped to a local user. The gateway then acts for that user with an
//! access token of its own (see `auth::authenticate`): chat-core trusts only
//! the shared secret.

mod config;
mod keys;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

pub use config::{ProviderConfig, parse_providers};
use keys::KeySource;

/// Longest token looked at; anything larger is refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;
/// Longest `sub` accepted, in bytes.
const MAX_SUBJECT_BYTES: usize = 255;
/// How long a JWKS request may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most `(issuer, subject)` mappings kept in memory.
const MAX_CACHED_USERS: usize = 10_000;

/// A verified external identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    /// The token's `exp`, in Unix seconds.
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

struct Provider {
    algorithms: Vec<Algorithm>,
    audience: String,
    keys: KeySource,
}

/// The configured providers, by issuer.
pub struct Providers {
    by_issuer: HashMap<String, Provider>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_issuer.keys()).finish()
    }
}

impl Providers {
    /// Builds the providers; JWKS documents are fetched on first use.
    pub fn new(configs: Vec<ProviderConfig>, jwks_min_refresh: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .build()
            .map_err(|e| format!("failed to build the jwks client: {e}"))?;
        let mut by_issuer = HashMap::new();
        for config in configs {
            let algorithms = config.parsed_algorithms()?;
            let keys = match (&config.jwks_url, &config.public_key_pem) {
                (Some(url), _) => {
                    KeySource::jwks(url.clone(), client.clone(), algorithms.clone(), jwks_min_refresh)
                }
                (None, Some(pem)) => KeySource::from_pem(pem, &algorithms)
                    .map_err(|e| format!("OIDC_PROVIDERS: provider `{}`: {e}", config.issuer))?,
                (None, None) => {
                    return Err(format!("OIDC_PROVIDERS: provider `{}` has no key", config.issuer));
                }
            };
            by_issuer.insert(
                config.issuer,
                Provider {
                    algorithms,
                    audience: config.audience,
                    keys,
                },
            );
        }
        Ok(Self { by_issuer })
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }

    /// Verifies a provider's token; `None` for anything not valid.
    pub async fn verify(&self, token: &str) -> Option<ExternalIdentity> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        // The issuer only picks the provider; it is verified with the signature below.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Unverified>(token).ok()?;
        let issuer = unverified.claims.iss?;
        let provider = self.by_issuer.get(&issuer)?;
        if !provider.algorithms.contains(&header.alg) {
            return None;
        }
        let key = provider.keys.key_for(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&provider.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .ok()?
            .claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT_BYTES {
            return None;
        }
        Some(ExternalIdentity {
            issuer,
            subject: claims.sub,
            expires_at: claims.exp,
        })
    }
}

// === impl ExternalUsers ===

/// Recently resolved `(issuer, subject)` → local user id mappings.
#[derive(Debug)]
pub struct ExternalUsers {
    ttl: Duration,
    entries: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl ExternalUsers {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, identity: &ExternalIdentity) -> Option<String> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(&(identity.issuer.clone(), identity.subject.clone()))
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(user_id, _)| user_id.clone())
    }

    pub fn put(&self, identity: &ExternalIdentity, user_id: &str) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_CACHED_USERS {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= MAX_CACHED_USERS {
                entries.clear();
            }
        }
        entries.insert(
            (identity.issuer.clone(), identity.subject.clone()),
            (user_id.to_owned(), Instant::now()),
        );
    }
}

/// Everything the gateway needs to accept external tokens.
#[derive(Debug)]
pub struct External {
    pub providers: Providers,
    pub users: ExternalUsers,
}
