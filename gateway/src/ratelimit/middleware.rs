//! The HTTP side of the limits: which tiers a request counts in, under which
//! key, and the `RateLimit-*` headers on the answer.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;
use serde::Deserialize;

use super::{Decision, Tier, address_key};
use crate::app::SharedState;
use crate::auth::{self, Authenticated, TokenQuery};
use crate::error::ApiError;
use crate::legacy;

/// Routes counted in the auth tier.
const AUTH_ROUTES: [&str; 3] = [
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
];
/// The route counted in the account tier as well.
const LOGIN_ROUTE: &str = "/api/v1/auth/login";
/// Longest username kept in an auth-tier key (usernames are at most 64 characters).
const MAX_USERNAME_CHARS: usize = 64;
/// The REST route that posts a message.
const MESSAGES_ROUTE: &str = "/api/v1/sessions/{id}/messages";

#[derive(Deserialize)]
struct AuthBody {
    username: Option<String>,
}

/// Counts the request in its tiers; answers 429 when one of them is exhausted,
/// otherwise sets the headers of the most constrained tier on the response.
pub async fn limit(State(state): State<SharedState>, mut request: Request, next: Next) -> Response {
    let ip = client_ip(&request, state.trust_forwarded_for);
    // Authenticated once here; the handler's extractor reuses the outcome.
    let user = match request_token(&request) {
        Some(token) => {
            let result = auth::authenticate(&state, &token).await;
            let user_id = result.as_ref().ok().map(|user| user.user_id.clone());
            request.extensions_mut().insert(Authenticated { token, result });
            user_id
        }
        None => None,
    };
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let is_post = request.method() == Method::POST;
    let is_auth_post = is_post
        && route.is_some_and(|route| AUTH_ROUTES.contains(&route) || legacy::AUTH_ROUTES.contains(&route));
    let is_login = is_post && route.is_some_and(|route| route == LOGIN_ROUTE || route == legacy::LOGIN_ROUTE);
    let is_message_post = is_post
        && route.is_some_and(|route| route == MESSAGES_ROUTE || legacy::MESSAGE_ROUTES.contains(&route));
    let limits = &state.rate_limits;

    let mut decisions: Vec<Decision> = Vec::with_capacity(2);
    let api_key = match &user {
        Some(user_id) => format!("user:{user_id}"),
        None => format!("ip:{ip}"),
    };
    match limits.check(Tier::Api, &api_key).await {
        Ok(decision) => decisions.extend(decision),
        Err(down) => return down.into_error().into_response(),
    }

    let request = if is_auth_post {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, state.limits.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(_) => return ApiError::too_large("request body is too large").into_response(),
        };
        let account = auth_account(&bytes);
        let auth_allowed = match limits.check(Tier::Auth, &format!("{ip}|{account}")).await {
            Ok(decision) => {
                decisions.extend(decision);
                decision.is_none_or(|d| d.allowed)
            }
            Err(down) => return down.into_error().into_response(),
        };
        // A login the address's own limit refused spends none of the account's.
        if is_login && auth_allowed && !account.is_empty() {
            match limits.check(Tier::Account, &account).await {
                Ok(decision) => decisions.extend(decision),
                Err(down) => return down.into_error().into_response(),
            }
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    if is_message_post && let Some(user_id) = &user {
        match limits.check(Tier::Messages, user_id).await {
            Ok(decision) => decisions.extend(decision),
            Err(down) => return down.into_error().into_response(),
        }
    }

    if let Some(denied) = decisions
        .iter()
        .filter(|d| !d.allowed)
        .max_by_key(|d| d.retry_after)
    {
        return denied.into_rejection();
    }
    let mut response = next.run(request).await;
    if let Some(tightest) = decisions.iter().min_by_key(|d| d.remaining) {
        tightest.apply_headers(response.headers_mut());
    }
    response
}

/// The request's access token (header, or query on the WebSocket).
fn request_token(request: &Request) -> Option<String> {
    let from_header = auth::bearer_token(request.headers()).map(str::to_owned);
    from_header.or_else(|| {
        Query::<TokenQuery>::try_from_uri(request.uri())
            .ok()
            .and_then(|Query(q)| q.access_token)
    })
}

/// Who an auth request is for: the username. Refresh tokens are opaque (and
/// change on every refresh), so refreshes count per client IP alone.
fn auth_account(body: &[u8]) -> String {
    serde_json::from_slice::<AuthBody>(body)
        .ok()
        .and_then(|body| body.username)
        // Longer names are invalid anyway; bounded keys keep the store small.
        .map(|username| {
            username
                .chars()
                .take(MAX_USERNAME_CHARS)
                .collect::<String>()
                .to_lowercase()
        })
        .unwrap_or_default()
}

/// The client's address as rate limits count it ([`address_key`]: IPv6 by
/// /64): the peer, or with `trust_forwarded_for` the address the (single,
/// trusted) proxy in front appended to `X-Forwarded-For`.
pub fn client_ip<B>(request: &http::Request<B>, trust_forwarded_for: bool) -> String {
    client_ip_of(request.headers(), request.extensions(), trust_forwarded_for)
}

/// [`client_ip`] of a request's headers and extensions.
pub fn client_ip_of(
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
    trust_forwarded_for: bool,
) -> String {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|v| v.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return address_key(ip);
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| address_key(addr.ip()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The client's address ([`client_ip`]) as an extractor.
#[derive(Clone, Debug)]
pub struct ClientAddress(pub String);

impl axum::extract::FromRequestParts<SharedState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip_of(
            &parts.headers,
            &parts.extensions,
            state.trust_forwarded_for,
        )))
    }
}
