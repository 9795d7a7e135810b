//! Postgres going away under a running stack: REST answers 503 and
//! `/readyz` turns red, nothing is kept in memory instead, and everything
//! works again once the database returns, without a restart. Runs when
//! `TEST_DATABASE_URL` is set (SQLite cannot be taken away).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use chat_core::testing::{CuttableProxy, socket_addr_of, with_host};
use common::TestStack;
use serde_json::{Value, json};

async fn wait_for_ready(stack: &TestStack, wanted: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = stack
            .http
            .get(stack.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status}, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let through_proxy = |url: &str| with_host(url, proxy.addr());
    let stack = TestStack::spawn_full(&[], &[], Some(&through_proxy))
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
    wait_for_ready(&stack, 200).await;

    proxy.cut();
    wait_for_ready(&stack, 503).await;
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
    wait_for_ready(&stack, 200).await;
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
