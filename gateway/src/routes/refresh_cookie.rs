//! The refresh token of browser pages, kept in an `HttpOnly` cookie instead
//! of script-readable storage.
//!
//! A page opts in by sending [`OPT_IN_HEADER`] on login, refresh and
//! logout: the refresh token then comes back as a `Set-Cookie` scoped to
//! [`COOKIE_PATH`] (where refresh and logout are), `HttpOnly`, `Secure`,
//! `SameSite=Strict`, and not in the JSON body; refresh and logout read the
//! cookie when the body names no token. The cookie is read only with that
//! header: a custom header needs a CORS preflight, and the CORS policy allows
//! it for no origin, so another site cannot spend or revoke the cookie. API clients that send no such
//! header keep getting `refresh_token` in JSON, as before.

use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

/// The request header by which a page asks for the cookie (any value but `0`).
pub const OPT_IN_HEADER: &str = "x-refresh-cookie";
/// The cookie's name.
pub const COOKIE_NAME: &str = "chat_refresh";
/// Where browsers send the cookie: `/api/v1/auth/refresh` and `/api/v1/auth/logout`.
pub const COOKIE_PATH: &str = "/api/v1/auth";

/// Whether the request asks for its refresh token in a cookie.
pub fn opted_in(headers: &HeaderMap) -> bool {
    headers
        .get(OPT_IN_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| !matches!(value.trim(), "" | "0" | "false"))
}

/// The refresh token a request's cookie carries, if any.
pub fn presented(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// `Set-Cookie` holding `refresh_token` for `max_age`; `None` for a token
/// that could not be a cookie value (ours are base64url, so never).
pub fn set(refresh_token: &str, max_age: Duration) -> Option<HeaderValue> {
    let value_ok = !refresh_token.is_empty()
        && refresh_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if !value_ok {
        return None;
    }
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={refresh_token}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        max_age.as_secs()
    ))
    .ok()
}

/// `Set-Cookie` that removes the cookie.
pub fn clear() -> HeaderValue {
    HeaderValue::from_static("chat_refresh=; Path=/api/v1/auth; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// Adds `cookie` to a response's headers.
pub fn append(headers: &mut HeaderMap, cookie: HeaderValue) {
    headers.append(SET_COOKIE, cookie);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_scoped_to_the_auth_routes() {
        let cookie = set("abc-_9", Duration::from_secs(60)).expect("cookie");
        assert_eq!(
            cookie,
            "chat_refresh=abc-_9; Path=/api/v1/auth; Max-Age=60; HttpOnly; Secure; SameSite=Strict"
        );
        assert!(set("a;b", Duration::from_secs(60)).is_none());
        assert!(set("", Duration::from_secs(60)).is_none());
        let clear = clear();
        let clear = clear.to_str().expect("ascii");
        assert!(clear.starts_with(&format!("{COOKIE_NAME}=; Path={COOKIE_PATH}; Max-Age=0")));
    }

    #[test]
    fn the_token_is_read_from_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; chat_refresh=tok; b=2"));
        assert_eq!(presented(&headers).as_deref(), Some("tok"));
        headers.clear();
        headers.append(COOKIE, HeaderValue::from_static("chat_refresh="));
        assert_eq!(presented(&headers), None);
        headers.insert(OPT_IN_HEADER, HeaderValue::from_static("1"));
        assert!(opted_in(&headers));
        headers.insert(OPT_IN_HEADER, HeaderValue::from_static("0"));
        assert!(!opted_in(&headers));
    }
}
