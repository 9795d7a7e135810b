//! Postgres going away under a running stack: REST answers 503 and
//! `/readyz` turns red, nothing is kept in memory instead, and everything
//! works again once the database returns, without a restart. Runs when
//! `TEST_DATABASE_URL` is set (SQLite cannot be taken away).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chat_core::testing::{CuttableProxy, TestDatabase, socket_addr_of, with_host};
use clap::Parser;
use serde_json::{Value, json};

const SECRET: &str = "outage-test-secret";

async fn wait_for_ready(http: &reqwest::Client, base: &str, wanted: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = http
            .get(format!("{base}/readyz"))
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
    let db = TestDatabase::new().await.unwrap();
    if !db.is_postgres() {
        eprintln!("skipped: set TEST_DATABASE_URL to run against Postgres");
        return;
    }
    let proxy = CuttableProxy::start(socket_addr_of(&db.url).unwrap())
        .await
        .unwrap();
    let worker = agent_worker::Application::build(agent_worker::Settings::parse_from([
        "agent-worker",
        "--listen",
        "127.0.0.1:0",
    ]))
    .await
    .unwrap();
    let worker_url = format!("http://{}", worker.local_addr());
    tokio::spawn(worker.run_until_stopped(std::future::pending()));
    let core = chat_core::Application::build(chat_core::Settings::parse_from([
        "chat-core",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &with_host(&db.url, proxy.addr()),
        "--migrate",
        "--agent-worker-url",
        &worker_url,
        "--jwt-secret",
        SECRET,
        "--health-interval-ms",
        "100",
    ]))
    .await
    .unwrap();
    let core_url = format!("http://{}", core.local_addr());
    tokio::spawn(core.run_until_stopped(std::future::pending()));
    let gateway = gateway::Application::build(gateway::Settings::parse_from([
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--chat-core-url",
        &core_url,
        "--jwt-secret",
        SECRET,
    ]))
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run_until_stopped(std::future::pending()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let credentials = json!({"username": "outage_user", "password": "correct horse battery"});
    let status = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let session: Value = http
        .post(format!("{base}/api/v1/sessions"))
        .bearer_auth(&token)
        .json(&json!({"agent": "echo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages_url = format!(
        "{base}/api/v1/sessions/{}/messages",
        session["id"].as_str().unwrap()
    );
    let post = |content: &str| {
        http.post(&messages_url)
            .bearer_auth(&token)
            .json(&json!({"content": content}))
            .send()
    };
    assert_eq!(post("before").await.unwrap().status(), 200);
    wait_for_ready(&http, &base, 200).await;

    proxy.cut();
    wait_for_ready(&http, &base, 503).await;
    let response = post("during").await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let response = http.get(&messages_url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 503);

    proxy.restore();
    wait_for_ready(&http, &base, 200).await;
    let response = post("after").await.unwrap();
    assert_eq!(response.status(), 200);
    let history: Value = http
        .get(&messages_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contents: Vec<_> = history["messages"]
        .as_array()
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
