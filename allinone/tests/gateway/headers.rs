//! Security headers and request ids on every kind of response.

use crate::common;

use std::sync::{Arc, Mutex};

use common::TestStack;
use reqwest::Method;
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;

fn assert_hardened(response: &reqwest::Response, what: &str) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_owned()
    };
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    let csp = header("content-security-policy");
    assert!(csp.contains("img-src 'self' data:"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!header("x-request-id").is_empty(), "{what}");
    assert!(
        response.headers().get("strict-transport-security").is_none(),
        "{what}: HSTS without TLS"
    );
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn_with(|s| s.auth_rate_limit_max = common::nz(1)).await?;
    let http = &stack.http;
    let login = stack.url("/api/v1/auth/login");
    let wrong = json!({"username": "zed", "password": "wrong password"});

    // Act
    let responses = [
        ("page", http.get(stack.url("/")).send().await?),
        ("script", http.get(stack.url("/app.js")).send().await?),
        ("liveness", http.get(stack.url("/healthz")).send().await?),
        ("unknown route", http.get(stack.url("/nope")).send().await?),
        (
            "unauthenticated",
            http.get(stack.url("/api/v1/sessions")).send().await?,
        ),
        ("wrong method", http.delete(stack.url("/healthz")).send().await?),
        (
            "too large",
            http.post(&login)
                .header("content-type", "application/json")
                .body(vec![b' '; 200_000])
                .send()
                .await?,
        ),
        ("invalid login", http.post(&login).json(&wrong).send().await?),
        ("rate limited", http.post(&login).json(&wrong).send().await?),
        (
            "preflight",
            http.request(Method::OPTIONS, stack.url("/api/v1/sessions"))
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "POST")
                .send()
                .await?,
        ),
    ];

    // Assert
    let statuses: Vec<_> = responses
        .iter()
        .map(|(what, r)| (*what, r.status().as_u16()))
        .collect();
    assert_eq!(
        statuses.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [200, 200, 200, 404, 401, 405, 413, 401, 429, 200],
        "{statuses:?}"
    );
    for (what, response) in &responses {
        assert_hardened(response, what);
    }
    Ok(())
}

#[tokio::test]
async fn request_ids_are_generated_or_propagated() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let id_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    // Act
    let generated = stack.http.get(stack.url("/healthz")).send().await?;
    let propagated = stack
        .http
        .get(stack.url("/healthz"))
        .header("x-request-id", "client-req-7")
        .send()
        .await?;
    let unusable = stack
        .http
        .get(stack.url("/healthz"))
        .header("x-request-id", "x".repeat(500))
        .send()
        .await?;

    // Assert
    let generated = id_of(&generated).expect("generated id");
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_eq!(id_of(&propagated).as_deref(), Some("client-req-7"));
    let replaced = id_of(&unusable).expect("replacement id");
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    Ok(())
}

/// A real tonic health server standing in for chat-core, recording the
/// `x-request-id` metadata of every call it receives.
async fn recording_health_server() -> anyhow::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("chat.v1.ChatService", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let layer = tower::ServiceBuilder::new().map_request(move |request: http::Request<tonic::body::Body>| {
        if let Some(id) = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
        {
            record.lock().expect("lock").push(id.to_owned());
        }
        request
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok((url, seen))
}

#[tokio::test]
async fn request_id_is_forwarded_to_chat_core_as_grpc_metadata() -> anyhow::Result<()> {
    // Arrange
    let (core_url, seen) = recording_health_server().await?;
    let addr = common::spawn_gateway(&core_url, |_| {}).await?;
    let http = reqwest::Client::new();
    let keys = gateway::auth::Tokens::new(
        common::SECRET.as_bytes(),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    );
    let token = keys
        .issue_access("00000000-0000-7000-8000-000000000001", None)
        .expect("token");
    // The stand-in answers only health, so the call itself fails: what
    // matters is the metadata chat-core receives.
    let agents = format!("http://{addr}/api/v1/agents");

    // Act
    let given = http
        .get(&agents)
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-1")
        .send()
        .await?;
    let generated = http.get(&agents).bearer_auth(&token).send().await?;

    // Assert
    let generated_id = generated.headers()["x-request-id"].to_str()?.to_owned();
    let seen: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|id| !id.is_empty())
        .cloned()
        .collect();
    assert_eq!(given.headers()["x-request-id"], "trace-me-1");
    assert!(seen.contains(&"trace-me-1".to_owned()), "{seen:?}");
    assert!(seen.contains(&generated_id), "{seen:?}");
    Ok(())
}

#[tokio::test]
async fn hsts_only_when_a_trusted_proxy_terminated_tls() -> anyhow::Result<()> {
    // Arrange
    let behind_proxy = TestStack::spawn_with(|s| s.trust_forwarded_for = true).await?;
    let direct = TestStack::spawn().await?;
    let hsts = |response: &reqwest::Response| response.headers().get("strict-transport-security").is_some();

    // Act
    let over_tls = behind_proxy
        .http
        .get(behind_proxy.url("/nope"))
        .header("x-forwarded-proto", "https")
        .send()
        .await?;
    let plain = behind_proxy
        .http
        .get(behind_proxy.url("/healthz"))
        .header("x-forwarded-proto", "http")
        .send()
        .await?;
    let spoofed = direct
        .http
        .get(direct.url("/healthz"))
        .header("x-forwarded-proto", "https")
        .send()
        .await?;

    // Assert
    assert!(hsts(&over_tls), "https through the trusted proxy, even on a 404");
    assert!(!hsts(&plain));
    assert!(
        !hsts(&spoofed),
        "x-forwarded-proto is ignored without --trust-forwarded-for"
    );
    Ok(())
}
