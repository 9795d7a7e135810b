//! Session lifecycle over REST: the open-session cap, resolve, end, status
//! filters with cursor paging, idle expiry by the sweeper, and the state
//! machine refusing what it does not allow (resolving an ended or expired
//! session, oversized notes).

#![allow(clippy::unwrap_used)]

use crate::common;

use common::TestStack;
use serde_json::{Value, json};

struct Api {
    stack: TestStack,
    token: String,
}

impl Api {
    /// A stack whose sessions expire after `ttl_secs` idle.
    async fn start(ttl_secs: u64) -> Self {
        let core = move |s: &mut chat_core::Settings| {
            s.max_sessions_per_user = 4;
            s.session_ttl_secs = ttl_secs;
            s.session_sweep_interval_ms = 50;
        };
        let stack = TestStack::spawn_full(core, |_| {}, None).await.unwrap();
        let token = stack.user("lifecycle_user").await.unwrap();
        Self { stack, token }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = self.stack.url(&format!("/api/v1{path}"));
        let mut request = self.stack.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/sessions", Some(body)).await
    }

    async fn ids(&self, query: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/sessions?{query}&limit=1{cursor}");
            let (status, page) = self.call(reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{page}");
            ids.extend(
                page["sessions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return ids,
            }
        }
    }
}

#[tokio::test]
async fn sessions_are_capped_resolved_ended_filtered_and_paged() {
    // Nothing expires while this test runs, however slow the machine.
    let api = Api::start(3600).await;
    let (status, kept) = api
        .create(json!({"title": "kept busy", "concurrency": "reject"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(kept["concurrency"], "reject");
    let mut ids = vec![kept["id"].as_str().unwrap().to_owned()];
    for title in ["b", "c", "d"] {
        let (status, session) = api.create(json!({"title": title})).await;
        assert_eq!(status, 201);
        ids.push(session["id"].as_str().unwrap().to_owned());
    }
    let (status, refused) = api.create(json!({})).await;
    assert_eq!(status, 409, "the fifth open session is refused: {refused}");
    assert_eq!(refused["error"]["code"], "conflict");

    let (status, resolved) = api
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{}/resolve", ids[1]),
            Some(json!({"notes": "done"})),
        )
        .await;
    assert_eq!(
        (
            status,
            resolved["status"].clone(),
            resolved["resolution_notes"].clone()
        ),
        (200, json!("resolved"), json!("done"))
    );
    let (status, ended) = api
        .call(reqwest::Method::POST, &format!("/sessions/{}/end", ids[2]), None)
        .await;
    assert_eq!((status, ended["status"].clone()), (200, json!("ended")));
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{}/messages", ids[2]),
            Some(json!({"content": "hi"})),
        )
        .await;
    assert_eq!(status, 409, "an ended session takes no messages");
    let (status, refused) = api
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{}/resolve", ids[2]),
            Some(json!({"notes": "reopen"})),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (409, json!("conflict")),
        "{refused}"
    );
    let (_, still) = api
        .call(reqwest::Method::GET, &format!("/sessions/{}", ids[2]), None)
        .await;
    assert_eq!(
        still["status"], "ended",
        "resolve does not reopen an ended session"
    );
    let (status, too_long) = api
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{}/resolve", ids[3]),
            Some(json!({"notes": "n".repeat(4001)})),
        )
        .await;
    assert_eq!(
        (status, too_long["error"]["code"].clone()),
        (413, json!("too_large")),
        "{too_long}"
    );
    assert_eq!(
        api.create(json!({})).await.0,
        201,
        "resolving and ending freed slots"
    );

    let unresolved = api.ids("status=unresolved").await;
    assert_eq!(unresolved.len(), 3, "{unresolved:?}");
    assert!(!unresolved.contains(&ids[1]) && !unresolved.contains(&ids[2]));
    assert_eq!(api.ids("status=resolved").await, vec![ids[1].clone()]);
    assert_eq!(api.ids("status=ended").await, vec![ids[2].clone()]);
    assert_eq!(api.ids("status=recent").await.len(), 5);
    let (status, bad) = api
        .call(reqwest::Method::GET, "/sessions?status=bogus", None)
        .await;
    assert_eq!((status, bad["error"]["code"].clone()), (400, json!("invalid")));
}

#[tokio::test]
async fn idle_active_sessions_expire_and_stay_expired() {
    // The sweeper runs every 50 ms with a 1 s TTL.
    let api = Api::start(1).await;
    let (_, idle) = api.create(json!({"title": "idle"})).await;
    let idle = idle["id"].as_str().unwrap();
    // (Which statuses expire is the session state machine's, tested with it.)
    common::eventually("the idle session to expire", || async {
        (api.ids("status=expired").await == [idle]).then_some(())
    })
    .await;
    let (status, refused) = api
        .call(reqwest::Method::POST, &format!("/sessions/{idle}/resolve"), None)
        .await;
    assert_eq!(
        status, 409,
        "resolve does not revive an expired session: {refused}"
    );
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{idle}/messages"),
            Some(json!({"content": "hi"})),
        )
        .await;
    assert_eq!(status, 409, "an expired session takes no messages");
    let (_, still) = api
        .call(reqwest::Method::GET, &format!("/sessions/{idle}"), None)
        .await;
    assert_eq!(still["status"], "expired");
}

#[tokio::test]
async fn sessions_naming_no_agent_are_routed_to_the_right_specialist_or_a_person() {
    // Arrange: the built-in agents and chat-core's default agent.
    let api = Api::start(3600).await;
    let (status, session) = api.create(json!({})).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["agent"], "bank", "the router is the default agent");
    let id = session["id"].as_str().unwrap();
    let messages = format!("/sessions/{id}/messages");

    // Act
    let (_, balance) = api
        .call(
            reqwest::Method::POST,
            &messages,
            Some(json!({"content": "What is my account balance?"})),
        )
        .await;
    let (_, human) = api
        .call(
            reqwest::Method::POST,
            &messages,
            Some(json!({"content": "I want to talk to a human"})),
        )
        .await;

    // Assert
    assert_eq!(balance["reply"]["agent"], "balances", "{balance}");
    assert!(
        balance["reply"]["content"]
            .as_str()
            .unwrap()
            .contains("account balance")
    );
    assert_eq!(human["reply"]["agent"], "escalation", "{human}");
    let (_, session) = api
        .call(reqwest::Method::GET, &format!("/sessions/{id}"), None)
        .await;
    assert_eq!(session["status"], "pending_human");
}
