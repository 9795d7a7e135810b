//! Every bad kind of the gateway's own HS256 access token gets 401 on REST
//! and on the WebSocket upgrade, and the server keeps serving.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chat_common::token::{Audience, Role, TokenKeys};
use common::{SECRET, TestStack};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn signed(claims: serde_json::Value, secret: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn bad_access_tokens_are_refused_and_the_server_keeps_serving() {
    let stack = TestStack::spawn().await.unwrap();
    let good = stack.user("token_owner").await.unwrap();
    let keys = TokenKeys::new(SECRET.as_bytes());
    let user_id = keys.verify(&good, Audience::Gateway).unwrap().sub;
    // A valid access token's claims, with `patch` applied (null removes a claim).
    let claims = |patch: serde_json::Value| {
        let mut base = json!({
            "sub": user_id, "role": "user", "typ": "access", "aud": ["chat-gateway", "chat-core"],
            "iss": "chat-backend", "iat": now(), "exp": now() + 600, "jti": "j",
        });
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    // The unpatched claims pass, so each case below fails for its own reason.
    let control = signed(claims(json!({})), SECRET.as_bytes(), Algorithm::HS256);
    let response = stack
        .http
        .get(stack.url("/api/v1/sessions"))
        .bearer_auth(&control)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let parts: Vec<&str> = good.split('.').collect();
    let payload: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    let mut elevated = payload.clone();
    elevated["role"] = json!("service");
    let cases = [
        (
            "alg none",
            format!("{}.{}.", B64.encode(br#"{"alg":"none","typ":"JWT"}"#), parts[1]),
        ),
        (
            "wrong key",
            signed(claims(json!({})), b"another-secret", Algorithm::HS256),
        ),
        (
            "HS512 instead of HS256",
            signed(claims(json!({})), SECRET.as_bytes(), Algorithm::HS512),
        ),
        (
            "expired",
            signed(
                claims(json!({"exp": now() - 600, "iat": now() - 1200})),
                SECRET.as_bytes(),
                Algorithm::HS256,
            ),
        ),
        (
            "not yet valid",
            signed(
                claims(json!({"nbf": now() + 600})),
                SECRET.as_bytes(),
                Algorithm::HS256,
            ),
        ),
        (
            "wrong issuer",
            signed(
                claims(json!({"iss": "someone-else"})),
                SECRET.as_bytes(),
                Algorithm::HS256,
            ),
        ),
        (
            "no audience",
            signed(claims(json!({"aud": null})), SECRET.as_bytes(), Algorithm::HS256),
        ),
        (
            "meant for chat-core only",
            signed(
                claims(json!({"aud": ["chat-core"]})),
                SECRET.as_bytes(),
                Algorithm::HS256,
            ),
        ),
        (
            "no type",
            signed(claims(json!({"typ": null})), SECRET.as_bytes(), Algorithm::HS256),
        ),
        (
            "a service type on a user token",
            signed(
                claims(json!({"typ": "service"})),
                SECRET.as_bytes(),
                Algorithm::HS256,
            ),
        ),
        (
            "a service token",
            keys.sign(&user_id, Role::Service, Duration::from_secs(600))
                .unwrap(),
        ),
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], B64.encode(elevated.to_string()), parts[2]),
        ),
        ("truncated", good[..good.len() - 10].to_owned()),
        ("huge", format!("{good}{}", "A".repeat(20_000))),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in &cases {
        let response = stack
            .http
            .get(stack.url("/api/v1/sessions"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{name}");

        let mut request = format!("ws://{}/api/v1/ws", stack.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
        assert!(refused.to_string().contains("401"), "{name}: {refused}");
    }
    // The owner's token still works afterwards.
    let response = stack
        .http
        .get(stack.url("/api/v1/sessions"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), stack.ws(&good))
        .await
        .unwrap()
        .unwrap();
}
