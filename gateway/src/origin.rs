//! Which browser origins may call the gateway: the CORS allow-list for HTTP,
//! and the `Origin` check of WebSocket upgrades (which CORS does not cover).

use std::time::Duration;

use axum::extract::FromRequestParts;
use chat_common::ErrorCode;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::SharedState;
use crate::error::ApiError;
use crate::ratelimit::{RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET};

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The origins allowed besides the gateway's own, as `scheme://host[:port]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Parses `--allowed-origins`; returns one line naming a bad entry.
    pub fn parse<S: AsRef<str>>(origins: &[S]) -> Result<Self, String> {
        let mut list = Vec::with_capacity(origins.len());
        for origin in origins {
            let origin = origin.as_ref().trim().trim_end_matches('/');
            if origin.is_empty() {
                continue;
            }
            let uri: http::Uri = origin
                .parse()
                .map_err(|_| format!("--allowed-origins: `{origin}` is not an origin"))?;
            let well_formed = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri
                    .path_and_query()
                    .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/");
            if !well_formed {
                return Err(format!(
                    "--allowed-origins: `{origin}` must look like https://host[:port]"
                ));
            }
            list.push(origin.to_ascii_lowercase());
        }
        Ok(Self(list))
    }

    pub fn contains(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.0.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }

    /// CORS for the listed origins only; with none, browsers get same-origin access only.
    pub fn cors_layer(&self) -> CorsLayer {
        let origins = self
            .0
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect::<Vec<_>>();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                ACCEPT,
                REQUEST_ID,
                // Legacy clients name their current session in it.
                HeaderName::from_static(crate::legacy::SESSION_HEADER),
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
            ])
            .expose_headers([
                REQUEST_ID,
                http::header::RETRY_AFTER,
                RATELIMIT_LIMIT,
                RATELIMIT_REMAINING,
                RATELIMIT_RESET,
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
            ])
            .max_age(PREFLIGHT_MAX_AGE)
    }

    /// Whether a WebSocket upgrade may proceed: no `Origin` (not a browser),
    /// the request's own host, or a listed origin.
    pub fn allows_upgrade(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        if self.contains(origin) {
            return true;
        }
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .map(|rest| rest.trim_end_matches('/'));
        match (origin_host, host.and_then(|h| h.to_str().ok())) {
            (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
            _ => false,
        }
    }
}

/// Extractor that refuses (403) a WebSocket upgrade from a foreign origin.
#[derive(Clone, Copy, Debug)]
pub struct UpgradeOrigin;

impl FromRequestParts<SharedState> for UpgradeOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        let host = parts.headers.get(HOST);
        let authority = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        if state
            .allowed_origins
            .allows_upgrade(parts.headers.get(ORIGIN), host.or(authority.as_ref()))
        {
            Ok(Self)
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, "origin not allowed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn origins_must_be_scheme_and_host() {
        let parsed = AllowedOrigins::parse(&["https://App.example.com/", " http://localhost:5173", ""])
            .expect("valid");
        assert!(parsed.contains("https://app.example.com"));
        assert!(parsed.contains("http://localhost:5173"));
        assert!(AllowedOrigins::parse(&["*"]).is_err());
        assert!(AllowedOrigins::parse(&["example.com"]).is_err());
        assert!(AllowedOrigins::parse(&["https://example.com/path"]).is_err());
        assert!(AllowedOrigins::parse(&["ftp://example.com"]).is_err());
    }

    #[test]
    fn upgrades_from_own_host_listed_origins_or_non_browsers_pass() {
        let origins = AllowedOrigins::parse(&["https://app.example.com"]).expect("valid");
        let host = value("chat.example.com");
        assert!(origins.allows_upgrade(None, Some(&host)));
        assert!(origins.allows_upgrade(Some(&value("https://chat.example.com")), Some(&host)));
        assert!(origins.allows_upgrade(Some(&value("https://app.example.com")), Some(&host)));
        assert!(!origins.allows_upgrade(Some(&value("https://evil.example")), Some(&host)));
        assert!(!origins.allows_upgrade(Some(&value("https://chat.example.com.evil")), Some(&host)));
        assert!(!origins.allows_upgrade(Some(&value("null")), Some(&host)));
        assert!(!origins.allows_upgrade(Some(&value("https://evil.example")), None));
    }
}
