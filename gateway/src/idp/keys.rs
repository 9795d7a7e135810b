//! A provider's signing keys: one PEM key, or a JWKS document fetched with
//! reqwest, cached, and fetched again when a token names an unknown `kid`
//! (at most once per `min_refresh`, so unknown kids cannot flood the provider).

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

/// A JWKS older than this is fetched again on next use.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Where a provider's keys come from.
pub enum KeySource {
    Static(Vec<Key>),
    Jwks(Jwks),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(keys) => write!(f, "KeySource::Static({} keys)", keys.len()),
            Self::Jwks(jwks) => write!(f, "KeySource::Jwks({})", jwks.url),
        }
    }
}

impl KeySource {
    /// The PEM public key, for each of `algorithms` it can serve.
    pub fn from_pem(pem: &str, algorithms: &[Algorithm]) -> Result<Self, String> {
        let keys: Vec<Key> = algorithms
            .iter()
            .filter_map(|&alg| {
                let key = match alg {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()).ok()?,
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()).ok()?,
                    _ => return None,
                };
                Some(Key { kid: None, alg, key })
            })
            .collect();
        if keys.is_empty() {
            return Err("public_key_pem is not an RSA or P-256 public key for the listed algorithms".into());
        }
        Ok(Self::Static(keys))
    }

    pub fn jwks(
        url: String,
        client: reqwest::Client,
        algorithms: Vec<Algorithm>,
        min_refresh: Duration,
    ) -> Self {
        Self::Jwks(Jwks {
            url,
            client,
            algorithms,
            min_refresh,
            keys: RwLock::new(Vec::new()),
            fetched_at: Mutex::new(None),
        })
    }

    /// The key for a token's `kid` and `alg`, if the provider has one.
    pub async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        match self {
            Self::Static(keys) => find(keys, kid, alg),
            Self::Jwks(jwks) => jwks.key_for(kid, alg).await,
        }
    }
}

/// A key matching `kid` and `alg`; without a `kid`, the only key of that `alg`.
fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let mut candidates = keys.iter().filter(|k| k.alg == alg);
    match kid {
        Some(kid) => candidates
            .find(|k| k.kid.as_deref() == Some(kid))
            .map(|k| k.key.clone()),
        None => {
            let only = candidates.next()?;
            candidates.next().is_none().then(|| only.key.clone())
        }
    }
}

// === impl Jwks ===

/// A JWKS document's keys, fetched lazily and refreshed on an unknown `kid`.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    algorithms: Vec<Algorithm>,
    min_refresh: Duration,
    keys: RwLock<Vec<Key>>,
    /// When the last fetch was attempted; held while fetching, so one task fetches.
    fetched_at: Mutex<Option<Instant>>,
}

impl Jwks {
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let fresh = self
            .fetched_at
            .try_lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < JWKS_MAX_AGE);
        if let Some(key) = find(&self.keys.read().await, kid, alg)
            && fresh
        {
            return Some(key);
        }
        let mut fetched_at = self.fetched_at.lock().await;
        let recently = fetched_at.is_some_and(|at| at.elapsed() < self.min_refresh);
        if !recently {
            *fetched_at = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => *self.keys.write().await = keys,
                Err(error) => tracing::warn!(url = %self.url, %error, "failed to fetch jwks"),
            }
        }
        drop(fetched_at);
        find(&self.keys.read().await, kid, alg)
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("jwks document is too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let document: Document = serde_json::from_slice(&body).map_err(|e| format!("invalid jwks: {e}"))?;
        // Keys of other kinds or uses are skipped, not fatal.
        Ok(document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| self.usable(&jwk))
            .collect())
    }

    /// The key of a signing JWK whose algorithm this provider accepts.
    fn usable(&self, jwk: &Jwk) -> Option<Key> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => return None,
        };
        if !self.algorithms.contains(&alg) {
            return None;
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        })
    }
}
