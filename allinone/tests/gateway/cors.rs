//! Browser origins: CORS preflights for the allow-list, and the WebSocket `Origin` check.

use crate::common;

use common::TestStack;
use reqwest::Method;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

const ALLOWED: &str = "https://app.example.com";

async fn preflight(stack: &TestStack, origin: &str) -> anyhow::Result<reqwest::Response> {
    Ok(stack
        .http
        .request(Method::OPTIONS, stack.url("/api/v1/sessions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await?)
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn preflight_from_a_listed_origin_is_allowed() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| {
        s.allowed_origins = vec!["http://localhost:5173".into(), "https://app.example.com".into()];
    })
    .await?;

    // Act
    let response = preflight(&stack, ALLOWED).await?;

    // Assert
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(header(&response, "access-control-allow-origin"), Some(ALLOWED));
    let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let headers = header(&response, "access-control-allow-headers").unwrap_or_default();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    Ok(())
}

#[tokio::test]
async fn preflight_from_another_origin_gets_no_allow_origin() -> anyhow::Result<()> {
    // Arrange
    let listed = TestStack::spawn_with(|s| s.allowed_origins = vec![ALLOWED.into()]).await?;
    let unlisted = TestStack::spawn().await?;

    // Act
    let foreign = preflight(&listed, "https://evil.example").await?;
    let same_origin_only = preflight(&unlisted, ALLOWED).await?;

    // Assert
    assert_eq!(header(&foreign, "access-control-allow-origin"), None);
    assert_eq!(header(&same_origin_only, "access-control-allow-origin"), None);
    Ok(())
}

#[tokio::test]
async fn listed_origin_reads_responses_and_rate_limit_headers() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| s.allowed_origins = vec![ALLOWED.into()]).await?;
    let token = stack.user("alice").await?;

    // Act
    let response = stack
        .http
        .get(stack.url("/api/v1/agents"))
        .bearer_auth(&token)
        .header("origin", ALLOWED)
        .send()
        .await?;

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(ALLOWED));
    let exposed = header(&response, "access-control-expose-headers").unwrap_or_default();
    assert!(
        exposed.contains("ratelimit-remaining") && exposed.contains("retry-after"),
        "{exposed}"
    );
    Ok(())
}

async fn upgrade(stack: &TestStack, token: &str, origin: Option<&str>) -> anyhow::Result<Result<(), u16>> {
    let mut request = format!("ws://{}/api/v1/ws", stack.addr).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse()?);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(Ok(())),
        Err(tungstenite::Error::Http(response)) => Ok(Err(response.status().as_u16())),
        Err(other) => Err(other.into()),
    }
}

#[tokio::test]
async fn websocket_from_a_foreign_origin_is_forbidden() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| s.allowed_origins = vec![ALLOWED.into()]).await?;
    let token = stack.user("alice").await?;
    let own = format!("http://{}", stack.addr);

    // Act + assert
    assert_eq!(
        upgrade(&stack, &token, Some("https://evil.example")).await?,
        Err(403)
    );
    assert_eq!(upgrade(&stack, &token, Some(&own)).await?, Ok(()), "same host");
    assert_eq!(upgrade(&stack, &token, Some(ALLOWED)).await?, Ok(()), "listed");
    assert_eq!(upgrade(&stack, &token, None).await?, Ok(()), "not a browser");
    Ok(())
}
