//! External identity providers: RS256/ES256 tokens from configured issuers
//! (a JWKS served by a local axum server, and a PEM key) are verified, mapped
//! to one local user, and work on REST, WebSocket and gRPC-Web; every kind of
//! bad token gets 401 and the server keeps serving.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_proto::chat::v1 as pb;
use chat_proto::chat::v1::chat_service_client::ChatServiceClient;
use common::TestStack;
use futures::StreamExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tonic_web::GrpcWebClientLayer;

const ISSUER: &str = "https://idp.test";
const PEM_ISSUER: &str = "https://pem-idp.test";
const AUDIENCE: &str = "chat-backend-tests";

const RSA1: &str = include_str!("fixtures/rsa1.key.pem");
const RSA1_PUBLIC: &str = include_str!("fixtures/rsa1.pub.pem");
const RSA2: &str = include_str!("fixtures/rsa2.key.pem");
const EC1: &str = include_str!("fixtures/ec1.key.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");

// === the identity provider ===

/// A JWKS endpoint on 127.0.0.1:0 whose keys the test can change.
struct Idp {
    url: String,
    kids: Arc<Mutex<Vec<&'static str>>>,
    fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct IdpState {
    kids: Arc<Mutex<Vec<&'static str>>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks(State(state): State<IdpState>) -> axum::Json<Value> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let all: Value = serde_json::from_str(JWKS).expect("fixture jwks");
    let keys: Vec<Value> = state
        .kids
        .lock()
        .await
        .iter()
        .map(|kid| all[*kid].clone())
        .collect();
    axum::Json(json!({ "keys": keys }))
}

impl Idp {
    async fn spawn(kids: &[&'static str]) -> anyhow::Result<Self> {
        let state = IdpState {
            kids: Arc::new(Mutex::new(kids.to_vec())),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/jwks", listener.local_addr()?);
        let app = Router::new().route("/jwks", get(jwks)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url,
            kids: state.kids,
            fetches: state.fetches,
        })
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The gateway flags trusting this provider (JWKS) and the PEM provider.
    fn providers(&self) -> String {
        json!([
            {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": self.url},
            {"issuer": PEM_ISSUER, "audience": AUDIENCE, "public_key_pem": RSA1_PUBLIC, "algorithms": ["RS256"]},
        ])
        .to_string()
    }
}

async fn stack_with(idp: &Idp, min_refresh_secs: &str) -> anyhow::Result<TestStack> {
    let providers = idp.providers();
    let min_refresh_secs: u64 = min_refresh_secs.parse()?;
    TestStack::spawn_with(move |s| {
        s.oidc_providers = Some(providers);
        s.jwks_min_refresh_secs = min_refresh_secs;
    })
    .await
}

// === tokens ===

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "exp": now() + 600})
}

/// Signs with the fixture key `kid` names (RSA key 1 without one).
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let pem = match (alg, kid) {
        (Algorithm::ES256, _) => EC1,
        (_, Some("rsa-2")) => RSA2,
        _ => RSA1,
    };
    sign_with(pem, alg, kid, claims)
}

fn sign_with(pem: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("fixture key");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn rs256(sub: &str) -> String {
    sign(Algorithm::RS256, Some("rsa-1"), &claims(sub))
}

fn es256(sub: &str) -> String {
    sign(Algorithm::ES256, Some("ec-1"), &claims(sub))
}

/// An ES256 token of `sub` with some claims replaced.
fn with_claims(sub: &str, patch: Value) -> String {
    let mut claims = claims(sub);
    for (key, value) in patch.as_object().into_iter().flatten() {
        claims[key] = value.clone();
    }
    sign(Algorithm::ES256, Some("ec-1"), &claims)
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

// === helpers ===

async fn status(stack: &TestStack, token: &str) -> anyhow::Result<u16> {
    let response = stack
        .http
        .get(stack.url("/api/v1/sessions"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

async fn session_ids(stack: &TestStack, token: &str) -> anyhow::Result<Vec<String>> {
    let response = stack
        .http
        .get(stack.url("/api/v1/sessions"))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "list: {}", response.status());
    let body: Value = response.json().await?;
    Ok(body["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect())
}

// === tests ===

#[tokio::test]
async fn rsa_and_ec_tokens_of_one_subject_are_one_local_user() -> anyhow::Result<()> {
    // Arrange
    let idp = Idp::spawn(&["rsa-1", "ec-1"]).await?;
    let stack = stack_with(&idp, "30").await?;

    // Act: a session created with an RS256 token, listed with an ES256 one.
    let session = stack.session(&rs256("alice"), "echo").await?;
    let with_ec = session_ids(&stack, &es256("alice")).await?;
    let again = session_ids(&stack, &rs256("alice")).await?;
    let other = session_ids(&stack, &rs256("mallory")).await?;
    let pem = sign(
        Algorithm::RS256,
        None,
        &json!({"iss": PEM_ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now() + 600}),
    );
    let from_pem = session_ids(&stack, &pem).await?;

    // Assert
    assert_eq!(with_ec, std::slice::from_ref(&session));
    assert_eq!(again, std::slice::from_ref(&session));
    assert!(other.is_empty(), "another subject is another user");
    assert!(
        from_pem.is_empty(),
        "the same subject at another issuer is another user"
    );
    assert_eq!(idp.fetches(), 1, "the JWKS is cached");
    let foreign = stack
        .http
        .get(stack.url(&format!("/api/v1/sessions/{session}")))
        .bearer_auth(rs256("mallory"))
        .send()
        .await?;
    assert_eq!(foreign.status(), 403);
    Ok(())
}

#[tokio::test]
async fn external_tokens_work_over_websocket_and_grpc_web() -> anyhow::Result<()> {
    // Arrange
    let idp = Idp::spawn(&["rsa-1", "ec-1"]).await?;
    let stack = stack_with(&idp, "30").await?;
    let token = es256("walter");
    let session = stack.session(&token, "echo").await?;

    // Act
    let mut ws = stack.ws(&token).await?;
    let subscribed = ws.subscribe(&session).await;
    let http = Client::builder(TokioExecutor::new()).build_http();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    let mut grpc_web = ChatServiceClient::with_origin(service, stack.url("").parse()?);
    let mut request = tonic::Request::new(pb::ListSessionsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let listed = grpc_web.list_sessions(request).await?.into_inner();

    // Assert
    assert_eq!(subscribed["session_id"], session.as_str());
    assert_eq!(listed.sessions.len(), 1);
    assert_eq!(listed.sessions[0].id, session);
    Ok(())
}

#[tokio::test]
async fn a_websocket_renews_its_token_in_band_with_a_provider_token() -> anyhow::Result<()> {
    // Arrange
    let idp = Idp::spawn(&["rsa-1", "ec-1"]).await?;
    let stack = stack_with(&idp, "30").await?;
    let mut ws = stack.ws(&rs256("nina")).await?;

    // Act: another user's valid token comes last, as it closes the socket.
    ws.send(json!({"type": "auth", "access_token": es256("nina")}))
        .await;
    let renewed = ws.recv().await;
    ws.send(json!({"type": "auth", "access_token": with_claims("nina", json!({"aud": "other"}))}))
        .await;
    let invalid = ws.recv().await;
    ws.send(json!({"type": "auth", "access_token": es256("someone-else")}))
        .await;
    let foreign = ws.recv().await;
    let closed = ws.stream.next().await;

    // Assert
    assert_eq!(renewed["type"], "authenticated", "{renewed}");
    assert_eq!(invalid["code"], "unauthenticated", "{invalid}");
    assert_eq!(foreign["code"], "forbidden", "{foreign}");
    assert!(
        matches!(&closed, Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 1008),
        "{closed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_kid_fetches_the_jwks_again() -> anyhow::Result<()> {
    // Arrange: the provider starts with one key, then rotates to another.
    let idp = Idp::spawn(&["rsa-1"]).await?;
    let stack = stack_with(&idp, "0").await?;
    assert_eq!(status(&stack, &rs256("rita")).await?, 200);
    let rotated = sign(Algorithm::RS256, Some("rsa-2"), &claims("rita"));
    assert_eq!(status(&stack, &rotated).await?, 401, "not published yet");

    // Act
    idp.kids.lock().await.push("rsa-2");
    let after = status(&stack, &rotated).await?;

    // Assert
    assert_eq!(after, 200);
    assert_eq!(idp.fetches(), 3, "first use, then one fetch per unknown kid");
    Ok(())
}

#[tokio::test]
async fn unknown_kids_fetch_the_jwks_at_most_once_per_interval() -> anyhow::Result<()> {
    // Arrange
    let idp = Idp::spawn(&["rsa-1"]).await?;
    let stack = stack_with(&idp, "30").await?;
    assert_eq!(status(&stack, &rs256("una")).await?, 200);

    // Act: a flood of tokens naming kids the provider never published.
    for i in 0..5 {
        let token = sign(Algorithm::RS256, Some(&format!("made-up-{i}")), &claims("una"));
        assert_eq!(status(&stack, &token).await?, 401);
    }

    // Assert
    assert_eq!(idp.fetches(), 1);
    assert_eq!(status(&stack, &rs256("una")).await?, 200);
    Ok(())
}

#[tokio::test]
async fn bad_external_tokens_are_refused_and_the_server_keeps_serving() -> anyhow::Result<()> {
    // Arrange
    let idp = Idp::spawn(&["rsa-1", "ec-1"]).await?;
    let stack = stack_with(&idp, "30").await?;
    let valid = rs256("victor");
    let with = |patch: Value| {
        let mut claims = claims("victor");
        for (key, value) in patch.as_object().expect("object") {
            claims[key] = value.clone();
        }
        sign(Algorithm::RS256, Some("rsa-1"), &claims)
    };
    let (header, payload, signature) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        )
    };
    let tampered_payload = b64(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "admin", "exp": now() + 600}));
    let hs_with_public_key = jsonwebtoken::encode(
        &Header {
            kid: Some("rsa-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("victor"),
        &EncodingKey::from_secret(RSA1_PUBLIC.as_bytes()),
    )?;
    let huge = with(json!({"padding": "x".repeat(9 * 1024)}));
    let bad: Vec<(&str, String)> = vec![
        ("wrong issuer", with(json!({"iss": "https://evil.test"}))),
        ("wrong audience", with(json!({"aud": "someone-else"}))),
        ("no audience", with(json!({"aud": null}))),
        ("expired", with(json!({"exp": now() - 600}))),
        ("not yet valid", with(json!({"nbf": now() + 600}))),
        ("empty subject", with(json!({"sub": ""}))),
        (
            "alg none",
            format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"}))),
        ),
        ("HS256 signed with the RSA public key", hs_with_public_key),
        (
            "tampered payload",
            format!("{header}.{tampered_payload}.{signature}"),
        ),
        ("truncated", valid[..valid.len() - 12].to_owned()),
        ("no signature", format!("{header}.{payload}")),
        ("huge", huge),
        ("garbage", "not-a-token".into()),
        (
            "signed by another key under a published kid",
            sign_with(RSA2, Algorithm::RS256, Some("rsa-1"), &claims("victor")),
        ),
        (
            "ES256 header on an RSA signature",
            format!(
                "{}.{payload}.{signature}",
                b64(&json!({"alg": "ES256", "kid": "ec-1"}))
            ),
        ),
    ];

    // Act + Assert
    for (what, token) in &bad {
        let response = stack
            .http
            .get(stack.url("/api/v1/sessions"))
            .bearer_auth(token)
            .send()
            .await?;
        assert_eq!(response.status(), 401, "{what}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "unauthenticated", "{what}");
    }
    assert_eq!(status(&stack, &valid).await?, 200, "the server keeps serving");
    Ok(())
}
