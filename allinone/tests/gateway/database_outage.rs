//! Postgres going away under a running stack: REST answers JSON 503s,
//! chat-core's readiness turns red while the gateway's stays green (so
//! clients reach a gateway and get a clear error rather than a refused
//! connection), nothing is kept in memory instead, and everything works
//! again once the database returns, without a restart. Runs when
//! `TEST_DATABASE_URL` is set (SQLite cannot be taken away).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use chat_testkit::{CuttableProxy, socket_addr_of, with_host};
use common::TestStack;
use serde_json::{Value, json};

/// Waits until chat-core's gRPC readiness (`chat.v1.ChatService`) is `serving`.
async fn wait_for_core(stack: &TestStack, serving: bool) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(stack.core_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "chat.v1.ChatService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let wanted = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(deadline.into(), watch.message())
            .await
            .expect("chat-core readiness did not change in time")
            .unwrap()
            .expect("health stream open");
        if next.status() == wanted {
            return;
        }
    }
}

async fn gateway_ready(stack: &TestStack) -> u16 {
    stack
        .http
        .get(stack.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn postgres_outage_gives_503_and_red_readyz_then_recovers() {
    let Some(admin_url) = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: set TEST_DATABASE_URL to run against Postgres");
        return;
    };
    let proxy = CuttableProxy::start(socket_addr_of(&admin_url).unwrap())
        .await
        .unwrap();
    let proxy_addr = proxy.addr();
    let through_proxy = Box::new(move |url: &str| with_host(url, proxy_addr));
    let stack = TestStack::spawn_full(|_| {}, |_| {}, Some(through_proxy))
        .await
        .unwrap();
    let token = stack.user("outage_user").await.unwrap();
    let session = stack.session(&token, "echo").await.unwrap();
    let messages_url = stack.url(&format!("/api/v1/sessions/{session}/messages"));
    let post = |content: &str| {
        stack
            .http
            .post(&messages_url)
            .bearer_auth(&token)
            .json(&json!({"content": content}))
            .send()
    };
    assert_eq!(post("before").await.unwrap().status(), 200);
    wait_for_core(&stack, true).await;

    proxy.cut();
    wait_for_core(&stack, false).await;
    assert_eq!(gateway_ready(&stack).await, 200, "the gateway stays ready");
    let response = post("during").await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let response = stack
        .http
        .get(&messages_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    proxy.restore();
    wait_for_core(&stack, true).await;
    assert_eq!(post("after").await.unwrap().status(), 200);
    let contents: Vec<_> = stack
        .history(&token, &session)
        .await
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(
        contents,
        vec!["before", "before", "after", "after"],
        "nothing from the outage was kept"
    );
}
