//! Signed tokens: user access tokens issued by the gateway and service tokens
//! held by internal callers. chat-core verifies both on every call.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Issuer of every token this system signs.
pub const ISSUER: &str = "chat-backend";

/// Shortest accepted `JWT_SECRET`, in bytes: HS256 needs a key of at least
/// 256 bits (RFC 7518, section 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks the length of the shared token secret; the error is one line
/// naming the setting.
pub fn check_secret(secret: &[u8]) -> Result<(), String> {
    if secret.is_empty() {
        return Err("JWT_SECRET (or JWT_SECRET_FILE, --jwt-secret) is required".into());
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (it has {}); generate one with `openssl rand -hex 32`",
            secret.len()
        ));
    }
    Ok(())
}

/// Who a token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An end user: may act on their own sessions only.
    User,
    /// An internal service: may act on any session.
    Service,
}

/// What kind of token it is (the `typ` claim); it must agree with [`Role`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// A user's access token, issued by the gateway at login.
    Access,
    /// An internal caller's service token.
    Service,
}

impl TokenType {
    /// The type a token of `role` must have.
    pub fn of(role: Role) -> Self {
        match role {
            Role::User => Self::Access,
            Role::Service => Self::Service,
        }
    }
}

/// A service that verifies tokens; a token names in `aud` the ones it is meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The gateway: user access tokens only.
    Gateway,
    /// chat-core: service tokens (the gateway's among them), and user access
    /// tokens where it is configured to take them (`--accept-user-tokens`).
    ChatCore,
    /// agent-workers: chat-core's own short-lived service tokens.
    AgentWorker,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "chat-gateway",
            Self::ChatCore => "chat-core",
            Self::AgentWorker => "agent-worker",
        }
    }

    /// Where a token of `role` is accepted unless its signer says otherwise:
    /// a user's access token at the gateway and at a chat-core that accepts
    /// user tokens; a
    /// service token at chat-core only.
    pub fn defaults(role: Role) -> &'static [Audience] {
        match role {
            Role::User => &[Self::Gateway, Self::ChatCore],
            Role::Service => &[Self::ChatCore],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub typ: TokenType,
    /// The services the token is meant for ([`Audience::as_str`]).
    pub aud: Vec<String>,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// What a service token may call, space separated ([`Scope`]); none: all
    /// its audiences serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The sign-in (refresh token family) a user's access token came from:
    /// logging out of it revokes the token ([`SIGN_IN_METADATA`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    /// Whether the token may call what `scope` names.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scope
            .as_deref()
            .is_none_or(|scopes| scopes.split_whitespace().any(|s| s == scope.as_str()))
    }
}

/// What a service token may be limited to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// chat-core's `chat.v1.ChatService`.
    Chat,
    /// chat-core's `chat.v1.UserService` (accounts and refresh tokens).
    Users,
    /// gRPC server reflection, where it is enabled.
    Reflection,
    /// agent-workers' `agent.v1.AgentWorker`.
    Run,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Users => "users",
            Self::Reflection => "reflection",
            Self::Run => "run",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is invalid or expired")]
    Invalid,
    #[error("failed to sign token")]
    Sign,
}

/// Signs and verifies HS256 tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys of `secret`; services check its length at start-up with [`check_secret`].
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs a token of `role` for the role's default audiences.
    pub fn sign(&self, sub: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        self.sign_for(sub, role, Audience::defaults(role), ttl)
    }

    /// Signs a user's access token of sign-in `sid` for the default audiences.
    pub fn sign_user(&self, sub: &str, sid: Option<&str>, ttl: Duration) -> Result<String, TokenError> {
        self.sign_claims(sub, Role::User, Audience::defaults(Role::User), None, sid, ttl)
    }

    /// Signs a token of `role` meant for `audiences` only.
    pub fn sign_for(
        &self,
        sub: &str,
        role: Role,
        audiences: &[Audience],
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.sign_scoped(sub, role, audiences, None, ttl)
    }

    /// Signs a token of `role` meant for `audiences`, limited to `scopes` when given.
    pub fn sign_scoped(
        &self,
        sub: &str,
        role: Role,
        audiences: &[Audience],
        scopes: Option<&[Scope]>,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.sign_claims(sub, role, audiences, scopes, None, ttl)
    }

    fn sign_claims(
        &self,
        sub: &str,
        role: Role,
        audiences: &[Audience],
        scopes: Option<&[Scope]>,
        sid: Option<&str>,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let now = unix_now();
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            typ: TokenType::of(role),
            aud: audiences.iter().map(|a| a.as_str().to_owned()).collect(),
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes.map(|scopes| scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
            sid: sid.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Sign)
    }

    /// Verifies a token meant for `audience`: signature, issuer, expiry, an
    /// `aud` naming `audience`, and a `typ` that agrees with its role.
    pub fn verify(&self, token: &str, audience: Audience) -> Result<Claims, TokenError> {
        if token.len() > 8 * 1024 {
            return Err(TokenError::Invalid);
        }
        let mut validation = self.validation.clone();
        validation.set_audience(&[audience.as_str()]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)?;
        if claims.typ != TokenType::of(claims.role) {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Verifies the bearer token of a gRPC call's `authorization` metadata
    /// for `audience`; a missing or bad token is `Unauthenticated`.
    pub fn verify_call<T>(
        &self,
        request: &tonic::Request<T>,
        audience: Audience,
    ) -> Result<Claims, tonic::Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| crate::ErrorCode::Unauthenticated.status("missing bearer token"))?;
        self.verify(token, audience)
            .map_err(|_| crate::ErrorCode::Unauthenticated.status("invalid or expired token"))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

// === SelfSigned ===

/// A service's own short-lived token for other services, re-signed shortly
/// before it expires; as a tonic interceptor it sets `authorization` on
/// every call.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    keys: std::sync::Arc<TokenKeys>,
    subject: &'static str,
    audiences: &'static [Audience],
    ttl: Duration,
    cached: std::sync::Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>,
}

impl SelfSigned {
    /// Tokens of service `subject` for `audiences`, each valid `ttl`.
    pub fn new(
        keys: std::sync::Arc<TokenKeys>,
        subject: &'static str,
        audiences: &'static [Audience],
        ttl: Duration,
    ) -> Self {
        Self {
            keys,
            subject,
            audiences,
            ttl,
            cached: std::sync::Arc::default(),
        }
    }

    /// The current token, re-signed once it has less than a fifth of its life left.
    pub fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if let Some((token, expires)) = cached.as_ref()
            && now + self.ttl / 5 < *expires
        {
            return Ok(token.clone());
        }
        let token = self
            .keys
            .sign_for(self.subject, Role::Service, self.audiences, self.ttl)?;
        *cached = Some((token.clone(), now + self.ttl));
        Ok(token)
    }
}

impl tonic::service::Interceptor for SelfSigned {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let token = self
            .token()
            .map_err(|_| tonic::Status::internal("failed to sign a service token"))?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::internal("failed to sign a service token"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Metadata naming the user a service acts for: the gateway calls chat-core
/// with its service token and the user it has verified in this key.
pub const ON_BEHALF_OF_METADATA: &str = "x-on-behalf-of";

/// Metadata naming the sign-in (the `sid` of the user's access token) the
/// gateway acts for, so chat-core refuses the calls of a signed-out sign-in.
pub const SIGN_IN_METADATA: &str = "x-sign-in";

/// Reads the bearer token of an `authorization` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn signed_token_verifies_and_keeps_its_claims() {
        let keys = TokenKeys::new(SECRET);
        let token = keys.sign("u1", Role::User, Duration::from_secs(60)).unwrap();
        let claims = keys.verify(&token, Audience::Gateway).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.role, Role::User);
        assert_eq!(claims.typ, TokenType::Access);
        assert_eq!(claims.aud, ["chat-gateway", "chat-core"]);
        assert!(keys.verify(&token, Audience::ChatCore).is_ok());
    }

    #[test]
    fn token_from_another_secret_is_rejected() {
        let token = TokenKeys::new(b"a")
            .sign("u1", Role::Service, Duration::from_secs(60))
            .unwrap();
        assert!(TokenKeys::new(b"b").verify(&token, Audience::ChatCore).is_err());
        assert!(
            TokenKeys::new(b"b")
                .verify("garbage", Audience::ChatCore)
                .is_err()
        );
    }

    #[test]
    fn each_service_accepts_only_tokens_meant_for_it() {
        let keys = TokenKeys::new(SECRET);
        let service = keys.sign("s", Role::Service, Duration::from_secs(60)).unwrap();
        assert!(keys.verify(&service, Audience::ChatCore).is_ok());
        assert!(
            keys.verify(&service, Audience::Gateway).is_err(),
            "service tokens are not for the gateway"
        );
        let core_only = keys
            .sign_for("u1", Role::User, &[Audience::ChatCore], Duration::from_secs(60))
            .unwrap();
        assert!(keys.verify(&core_only, Audience::Gateway).is_err());
    }

    #[test]
    fn a_type_that_disagrees_with_the_role_is_rejected() {
        let claims = serde_json::json!({
            "sub": "u1", "role": "service", "typ": "access", "aud": ["chat-core"],
            "iss": ISSUER, "iat": unix_now(), "exp": unix_now() + 60, "jti": "j",
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(TokenKeys::new(SECRET).verify(&token, Audience::ChatCore).is_err());
    }

    #[test]
    fn secrets_shorter_than_256_bits_are_refused() {
        assert!(check_secret(b"").unwrap_err().contains("required"));
        let short = check_secret(&[b'x'; 31]).unwrap_err();
        assert!(
            short.starts_with("JWT_SECRET must be at least 32 bytes"),
            "{short}"
        );
        assert!(check_secret(SECRET).is_ok());
    }

    #[test]
    fn bearer_prefix_is_required() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
