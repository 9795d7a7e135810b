//! Refresh tokens over REST: rotation on every refresh, reuse of a spent
//! token revoking its whole family, logout, and expiry.

use crate::common;

use std::time::Duration;

use common::TestStack;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Registers `username` and logs in; returns the login's token pair.
async fn login(stack: &TestStack, username: &str) -> anyhow::Result<Value> {
    stack.register(username).await?;
    stack.login(username).await
}

/// Presents `refresh_token`; returns the status and body.
async fn refresh(stack: &TestStack, refresh_token: &Value) -> anyhow::Result<(StatusCode, Value)> {
    let response = stack
        .http
        .post(stack.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await?;
    Ok((response.status(), response.json().await?))
}

async fn sessions_status(stack: &TestStack, access_token: &Value) -> anyhow::Result<StatusCode> {
    let response = stack
        .http
        .get(stack.url("/api/v1/sessions"))
        .bearer_auth(access_token.as_str().unwrap_or_default())
        .send()
        .await?;
    Ok(response.status())
}

#[tokio::test]
async fn refresh_rotates_the_token_and_the_new_pair_works() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    let first = login(&stack, "rotating").await?;

    let (status, second) = refresh(&stack, &first["refresh_token"]).await?;
    assert_eq!(status, 200, "{second}");
    let (status, third) = refresh(&stack, &second["refresh_token"]).await?;

    assert_eq!(status, 200, "{third}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(third["refresh_token"], second["refresh_token"]);
    assert_eq!(third["token_type"], "Bearer");
    assert_eq!(sessions_status(&stack, &third["access_token"]).await?, 200);
    assert_eq!(
        sessions_status(&stack, &third["refresh_token"]).await?,
        401,
        "a refresh token is not an access token"
    );
    Ok(())
}

#[tokio::test]
async fn reusing_a_rotated_token_revokes_its_whole_family() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    let stolen = login(&stack, "victim").await?;
    let other_device = stack.login("victim").await?;
    let (_, newest) = refresh(&stack, &stolen["refresh_token"]).await?;

    let (reuse, body) = refresh(&stack, &stolen["refresh_token"]).await?;

    assert_eq!(reuse, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let (after, _) = refresh(&stack, &newest["refresh_token"]).await?;
    assert_eq!(after, 401, "the newest token of the family is revoked too");
    let (other, _) = refresh(&stack, &other_device["refresh_token"]).await?;
    assert_eq!(other, 200, "another login's family is untouched");
    Ok(())
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    let pair = login(&stack, "leaving").await?;
    let (_, pair) = refresh(&stack, &pair["refresh_token"]).await?;
    let logout = || {
        stack
            .http
            .post(stack.url("/api/v1/auth/logout"))
            .json(&json!({"refresh_token": pair["refresh_token"]}))
            .send()
    };

    let first = logout().await?;
    let again = logout().await?;

    assert_eq!(first.status(), 204);
    assert_eq!(again.status(), 204, "logout is idempotent");
    let (status, _) = refresh(&stack, &pair["refresh_token"]).await?;
    assert_eq!(status, 401);
    let empty = stack.http.post(stack.url("/api/v1/auth/logout")).send().await?;
    assert_eq!(empty.status(), 204);
    Ok(())
}

#[tokio::test]
async fn expired_refresh_token_is_refused() -> anyhow::Result<()> {
    let stack = TestStack::spawn_with(|s| s.refresh_token_ttl_secs = 1).await?;
    let pair = login(&stack, "sleepy").await?;

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = refresh(&stack, &pair["refresh_token"]).await?;

    assert_eq!(status, 401, "{body}");
    Ok(())
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_refused() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    for token in [json!(""), json!("garbage"), json!("x".repeat(4096)), json!(null)] {
        let (status, body) = refresh(&stack, &token).await?;
        assert!(status == 401 || status == 400, "{token:.20}: {status} {body}");
    }
    let (status, _) = refresh(&stack, &json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn a_family_past_its_absolute_lifetime_no_longer_refreshes() -> anyhow::Result<()> {
    // Arrange: tokens that live a day each, in a family that lives three seconds.
    let family_ttl = Duration::from_secs(3);
    let stack = TestStack::spawn_with(move |s| {
        s.refresh_token_ttl_secs = 24 * 3600;
        s.refresh_family_ttl_secs = family_ttl.as_secs();
    })
    .await?;
    let first = login(&stack, "aging").await?;
    // The family started before `login` returned (registering and hashing
    // the password, however slow, came before it).
    let logged_in = std::time::Instant::now();

    // Act: rotation works within the family's lifetime...
    let (status, second) = refresh(&stack, &first["refresh_token"]).await?;
    assert_eq!(status, 200, "{second}");
    // ...then the family's end passes (the clock is what is under test here).
    tokio::time::sleep((family_ttl + Duration::from_millis(500)).saturating_sub(logged_in.elapsed())).await;
    let (status, body) = refresh(&stack, &second["refresh_token"]).await?;

    // Assert: 401 although the token itself had a day to live; a new login starts afresh.
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let again = stack.login("aging").await?;
    let (status, _) = refresh(&stack, &again["refresh_token"]).await?;
    assert_eq!(status, 200);
    Ok(())
}

// === the page's refresh cookie ===

/// The `chat_refresh` value a response sets, and the whole `Set-Cookie` line.
fn refresh_cookie(response: &reqwest::Response) -> Option<(String, String)> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|line| line.starts_with("chat_refresh="))
        .map(|line| {
            let value = line["chat_refresh=".len()..]
                .split(';')
                .next()
                .unwrap_or_default();
            (value.to_owned(), line.to_owned())
        })
}

/// Posts to an auth route as the page does: `X-Refresh-Cookie`, the cookie
/// (if any) and an empty JSON body.
async fn page_post(stack: &TestStack, path: &str, cookie: Option<&str>) -> anyhow::Result<reqwest::Response> {
    let mut request = stack
        .http
        .post(stack.url(path))
        .header("x-refresh-cookie", "1")
        .json(&json!({}));
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, format!("other=1; chat_refresh={cookie}"));
    }
    Ok(request.send().await?)
}

#[tokio::test]
async fn a_page_gets_its_refresh_token_as_an_http_only_cookie_and_refreshes_with_it() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    stack.register("cookie-page").await?;

    let login = stack
        .http
        .post(stack.url("/api/v1/auth/login"))
        .header("x-refresh-cookie", "1")
        .json(&json!({"username": "cookie-page", "password": common::PASSWORD}))
        .send()
        .await?;
    assert_eq!(login.status(), 200);
    let (first, line) = refresh_cookie(&login).expect("login sets the refresh cookie");
    for attribute in [
        "Path=/api/v1/auth",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=",
    ] {
        assert!(line.contains(attribute), "{line} lacks {attribute}");
    }
    let body: Value = login.json().await?;
    assert!(body.get("refresh_token").is_none(), "not in the JSON: {body}");
    assert_eq!(sessions_status(&stack, &body["access_token"]).await?, 200);

    let refreshed = page_post(&stack, "/api/v1/auth/refresh", Some(&first)).await?;
    assert_eq!(refreshed.status(), 200);
    let (second, _) = refresh_cookie(&refreshed).expect("refresh renews the cookie");
    assert_ne!(second, first, "rotated");
    let body: Value = refreshed.json().await?;
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(sessions_status(&stack, &body["access_token"]).await?, 200);

    let replayed = page_post(&stack, "/api/v1/auth/refresh", Some(&first)).await?;
    assert_eq!(replayed.status(), 401, "the spent cookie is refused");
    let (cleared, _) = refresh_cookie(&replayed).expect("a refused cookie is cleared");
    assert_eq!(cleared, "");
    Ok(())
}

#[tokio::test]
async fn the_cookie_is_read_only_with_the_page_header_and_logout_revokes_and_clears_it() -> anyhow::Result<()>
{
    let stack = TestStack::spawn().await?;
    stack.register("cookie-out").await?;
    let login = stack
        .http
        .post(stack.url("/api/v1/auth/login"))
        .header("x-refresh-cookie", "1")
        .json(&json!({"username": "cookie-out", "password": common::PASSWORD}))
        .send()
        .await?;
    let (token, _) = refresh_cookie(&login).expect("cookie");

    let without_header = stack
        .http
        .post(stack.url("/api/v1/auth/refresh"))
        .header(reqwest::header::COOKIE, format!("chat_refresh={token}"))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(
        without_header.status(),
        401,
        "another site's form post (no custom header) cannot spend the cookie"
    );

    let logout = page_post(&stack, "/api/v1/auth/logout", Some(&token)).await?;
    assert_eq!(logout.status(), 204);
    let (cleared, line) = refresh_cookie(&logout).expect("logout clears the cookie");
    assert_eq!(cleared, "");
    assert!(line.contains("Max-Age=0"), "{line}");
    let after = page_post(&stack, "/api/v1/auth/refresh", Some(&token)).await?;
    assert_eq!(after.status(), 401, "the cookie's family is revoked");
    Ok(())
}

#[tokio::test]
async fn api_clients_without_the_header_keep_the_refresh_token_in_json_and_no_cookie() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    stack.register("api-client").await?;
    let login = stack
        .http
        .post(stack.url("/api/v1/auth/login"))
        .json(&json!({"username": "api-client", "password": common::PASSWORD}))
        .send()
        .await?;
    assert!(refresh_cookie(&login).is_none());
    let body: Value = login.json().await?;
    let (status, refreshed) = refresh(&stack, &body["refresh_token"]).await?;
    assert_eq!(status, 200);
    assert!(refreshed["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));
    Ok(())
}
