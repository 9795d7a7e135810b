//! The replaced service's REST routes, driven the way its web client drives
//! them: the same headers on every call, the same bodies, and a check of
//! every response field the client reads.

use crate::common;

use base64::Engine as _;
use common::{PASSWORD, TestStack, nz};
use reqwest::Method;
use serde_json::{Value, json};

/// The legacy client's dev origin.
const CLIENT_ORIGIN: &str = "http://localhost:3000";

/// The legacy web client: every call carries JSON, the bearer token, a fresh
/// `X-Request-ID` and, once it has one, `X-Session-ID`.
struct LegacyClient<'a> {
    stack: &'a TestStack,
    token: String,
    session: Option<String>,
}

impl LegacyClient<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .stack
            .http
            .request(method, self.stack.url(path))
            .header("content-type", "application/json")
            .header("origin", CLIENT_ORIGIN)
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
            .bearer_auth(&self.token);
        if let Some(session) = &self.session {
            request = request.header("x-session-id", session);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// What the client's `new Date(...)` and "time ago" formatter need: a real date.
fn assert_date(value: &Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{what} `{text}`: {e}"));
}

/// The client shows `body.error` as text on any non-2xx.
fn assert_error(body: &Value, what: &str) {
    assert!(
        body["error"].is_string(),
        "{what}: error must be a string: {body}"
    );
}

/// Logs `username` in through the legacy `/auth/login`; returns the client and its user id.
async fn log_in<'a>(stack: &'a TestStack, username: &str) -> (LegacyClient<'a>, String) {
    stack.register(username).await.expect("register");
    let response = stack
        .http
        .post(stack.url("/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "success", "{body}");
    let user_id = body["data"]["user"]["userId"]
        .as_str()
        .expect("userId")
        .to_owned();
    assert_eq!(body["data"]["user"]["username"], username);
    let tokens = &body["data"]["tokens"];
    assert_eq!(tokens["tokenType"], "Bearer");
    assert!(tokens["expiresIn"].as_u64().is_some_and(|s| s > 0), "{tokens}");
    assert!(tokens["refreshToken"].is_string(), "{tokens}");
    let token = tokens["accessToken"].as_str().expect("accessToken").to_owned();
    (
        LegacyClient {
            stack,
            token,
            session: None,
        },
        user_id,
    )
}

#[tokio::test]
async fn legacy_client_request_sequence_works_end_to_end() -> anyhow::Result<()> {
    // Arrange: the client's origin is allowed, it logs in through /auth/login.
    let stack = TestStack::spawn_with(|s| s.allowed_origins = vec![CLIENT_ORIGIN.into()]).await?;
    let (mut client, user_id) = log_in(&stack, "alice").await;

    // The route guard decodes the token's payload with plain `atob` and needs a future `exp`.
    let payload = client.token.split('.').nth(1).expect("three-part token");
    assert!(!payload.contains(['-', '_']), "atob cannot read {payload}");
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD_NO_PAD.decode(payload)?)?;
    assert!(
        claims["exp"].as_u64() > Some(chrono::Utc::now().timestamp() as u64),
        "{claims}"
    );

    // Preflight for a call carrying every header the client sends.
    let preflight = stack
        .http
        .request(Method::OPTIONS, stack.url("/api/chat/message"))
        .header("origin", CLIENT_ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-request-id,x-session-id",
        )
        .send()
        .await?;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()?
        .to_owned();
    assert!(
        allowed.contains("x-session-id") && allowed.contains("x-request-id"),
        "{allowed}"
    );
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()?
        .to_owned();
    assert!(
        ["GET", "POST", "DELETE"].iter().all(|m| methods.contains(m)),
        "{methods}"
    );

    // 1. On load: the unresolved sessions (none yet).
    let unresolved = format!("/api/users/{user_id}/sessions?type=unresolved&limit=10");
    let (status, list) = client.get(&unresolved).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        (list["userId"].as_str(), list["type"].as_str()),
        (Some(user_id.as_str()), Some("unresolved"))
    );
    assert_eq!(
        (list["count"].as_u64(), list["sessions"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );

    // 2. Create: a body `userId` is ignored, the owner is the caller.
    let (status, created) = client
        .post(
            "/api/sessions",
            json!({"userId": "manual-user", "metadata": {"source": "web"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let session_id = created["sessionId"].as_str().expect("sessionId").to_owned();
    assert_eq!(created["session"]["sessionId"], session_id.as_str());
    assert_eq!(created["session"]["userId"], user_id.as_str());
    assert_eq!(created["session"]["status"], "active");
    assert_eq!(
        created["session"]["agent"], "bank",
        "new sessions go to the router"
    );
    assert_eq!(created["session"]["metadata"]["source"], "web");
    assert_date(&created["timestamp"], "timestamp");
    client.session = Some(session_id.clone());

    // 3. Send via /api/chat/message: X-Session-ID wins over the body's sessionId.
    let (status, turn) = client
        .post(
            "/api/chat/message",
            json!({"content": "What is my account balance?", "type": "text",
                   "sessionId": uuid::Uuid::new_v4().to_string(), "userId": "manual-user"}),
        )
        .await;
    assert_eq!(status, 200, "{turn}");
    assert_eq!(turn["sessionId"], session_id.as_str());
    let response = &turn["response"];
    assert!(response["id"].is_string(), "{turn}");
    assert!(
        response["content"]
            .as_str()
            .is_some_and(|c| c.contains("account balance")),
        "the balances specialist answers: {turn}"
    );
    assert_date(&response["timestamp"], "response.timestamp");
    assert_eq!(response["type"], "text");
    assert_eq!(response["direction"], "outgoing");
    assert_eq!(turn["agent"]["type"], "balances");
    assert!(turn["agent"]["confidence"].is_null() || turn["agent"]["confidence"].is_number());
    assert_eq!(turn["agent"]["agentsInvolved"], json!(["bank", "balances"]));
    assert_eq!(turn["message"]["content"], "What is my account balance?");
    assert_eq!(turn["message"]["direction"], "incoming");
    assert_eq!(turn["message"]["userId"], user_id.as_str());

    // 4. Send in the session: another specialist answers.
    let (status, turn) = client
        .post(
            &format!("/api/sessions/{session_id}/messages"),
            json!({"content": "I lost my card", "type": "text"}),
        )
        .await;
    assert_eq!(status, 200, "{turn}");
    assert!(
        turn["response"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("block")),
        "{turn}"
    );
    assert_eq!(turn["agentResult"]["agentsInvolved"], json!(["bank", "cards"]));
    let (status, session) = client.get(&format!("/api/sessions/{session_id}")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        (session["sessionId"].as_str(), session["status"].as_str()),
        (Some(session_id.as_str()), Some("active"))
    );
    assert_eq!(session["isResolved"], false);
    assert_eq!(session["session"]["sessionId"], session_id.as_str());

    // The list now shows it, with its newest messages.
    let (_, list) = client.get(&unresolved).await;
    assert_eq!(list["count"], 1, "{list}");
    let listed = &list["sessions"][0];
    assert_eq!(
        (listed["sessionId"].as_str(), listed["status"].as_str()),
        (Some(session_id.as_str()), Some("active"))
    );
    assert_eq!(listed["messageCount"], 4);
    assert_date(&listed["lastActivity"], "lastActivity");
    let recent = listed["recentMessages"].as_array().expect("recentMessages");
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[0]["direction"], "outgoing", "newest first: {listed}");

    // 5. History, paged: ascending, honouring offset and limit.
    let (status, page) = client
        .get(&format!("/api/sessions/{session_id}/history?offset=0&limit=3"))
        .await;
    assert_eq!(status, 200, "{page}");
    let seqs = |page: &Value| -> Vec<i64> {
        page["history"]
            .as_array()
            .expect("history array")
            .iter()
            .map(|m| m["sequence_number"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        (seqs(&page), page["count"].as_u64(), page["hasMore"].as_bool()),
        (vec![1, 2, 3], Some(3), Some(true))
    );
    assert_eq!(page["history"][0]["direction"], "incoming");
    assert_eq!(page["history"][0]["content"], "What is my account balance?");
    assert_date(&page["history"][0]["created_at"], "created_at");
    let (_, rest) = client
        .get(&format!(
            "/api/chat/history?sessionId={session_id}&offset=3&limit=3"
        ))
        .await;
    assert_eq!(
        (seqs(&rest), rest["count"].as_u64(), rest["hasMore"].as_bool()),
        (vec![4], Some(1), Some(false))
    );
    assert_eq!(rest["sessionId"], session_id.as_str());

    // 6. Resume: the session (with its id and status) and its history.
    let (status, resumed) = client
        .post(&format!("/api/sessions/{session_id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["session"]["sessionId"], session_id.as_str());
    assert_eq!(resumed["session"]["status"], "active");
    assert_eq!(resumed["session"]["isResolved"], false);
    assert_eq!(resumed["history"].as_array().map(Vec::len), Some(4));

    // 7. Resolve with notes.
    let (status, resolved) = client
        .post(
            &format!("/api/sessions/{session_id}/resolve"),
            json!({"notes": "balance explained"}),
        )
        .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(
        (resolved["success"].as_bool(), resolved["sessionId"].as_str()),
        (Some(true), Some(session_id.as_str()))
    );
    let (_, list) = client.get(&unresolved).await;
    assert_eq!(list["count"], 0, "resolved is not unresolved: {list}");

    // 8. End (DELETE with a reason): terminated, not erased.
    let (status, ended) = client
        .call(
            Method::DELETE,
            &format!("/api/sessions/{session_id}"),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(
        (ended["sessionId"].as_str(), ended["reason"].as_str()),
        (Some(session_id.as_str()), Some("done"))
    );
    let (_, session) = client.get(&format!("/api/sessions/{session_id}")).await;
    assert_eq!(session["status"], "terminated");
    let (_, history) = client.get(&format!("/api/sessions/{session_id}/history")).await;
    assert_eq!(history["count"], 4, "history is kept: {history}");
    Ok(())
}

#[tokio::test]
async fn ending_a_session_takes_it_out_of_the_unresolved_list() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let (client, user_id) = log_in(&stack, "alice").await;
    let (_, kept) = client.post("/api/sessions", json!({})).await;
    let (_, ended) = client.post("/api/sessions", json!({})).await;
    let ended_id = ended["sessionId"].as_str().unwrap();

    // Act
    let (status, _) = client
        .call(Method::DELETE, &format!("/api/sessions/{ended_id}"), None)
        .await;

    // Assert
    assert_eq!(status, 200);
    let (_, list) = client
        .get(&format!("/api/users/{user_id}/sessions?type=unresolved"))
        .await;
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [kept["sessionId"].as_str().unwrap()]);
    let (_, active) = client.get(&format!("/api/users/{user_id}/sessions")).await;
    assert_eq!(active["type"], "active", "the default type");
    let (status, bad) = client
        .get(&format!("/api/users/{user_id}/sessions?type=all"))
        .await;
    assert_eq!(status, 400, "{bad}");
    assert_error(&bad, "unknown type");
    Ok(())
}

#[tokio::test]
async fn legacy_routes_need_a_token_and_keep_users_apart() -> anyhow::Result<()> {
    // Arrange: alice and bob each with a session holding a message.
    let stack = TestStack::spawn().await?;
    let (alice, alice_id) = log_in(&stack, "alice").await;
    let (mut bob, bob_id) = log_in(&stack, "bob").await;
    let (_, created) = bob.post("/api/sessions", json!({})).await;
    let bobs = created["sessionId"].as_str().unwrap().to_owned();
    bob.session = Some(bobs.clone());
    let (status, _) = bob.post("/api/chat/message", json!({"content": "hello"})).await;
    assert_eq!(status, 200);
    let anonymous = LegacyClient {
        stack: &stack,
        token: String::new(),
        session: Some(bobs.clone()),
    };

    // Act + assert: without a token, every route is 401 with a string error.
    let routes = [
        (Method::GET, "/api".to_owned()),
        (Method::GET, "/api/agents".to_owned()),
        (Method::GET, format!("/api/users/{bob_id}/sessions")),
        (Method::POST, "/api/sessions".to_owned()),
        (Method::GET, format!("/api/sessions/{bobs}")),
        (Method::DELETE, format!("/api/sessions/{bobs}")),
        (Method::POST, format!("/api/sessions/{bobs}/resume")),
        (Method::POST, format!("/api/sessions/{bobs}/resolve")),
        (Method::GET, format!("/api/sessions/{bobs}/history")),
        (Method::POST, format!("/api/sessions/{bobs}/messages")),
        (Method::POST, "/api/chat/message".to_owned()),
        (Method::GET, format!("/api/chat/history?sessionId={bobs}")),
    ];
    for (method, path) in &routes {
        let (status, body) = anonymous
            .call(method.clone(), path, Some(json!({"content": "x"})))
            .await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_error(&body, path);
    }

    // Someone else's userId in the path is 403.
    let (status, body) = alice.get(&format!("/api/users/{bob_id}/sessions")).await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "other user's list");
    assert!(body.get("sessions").is_none());
    let (status, _) = alice.get(&format!("/api/users/{alice_id}/sessions")).await;
    assert_eq!(status, 200);

    // Someone else's session: refused on every route, no data.
    let mut alice = alice;
    alice.session = Some(bobs.clone());
    for (method, path) in routes.iter().skip(4) {
        let (status, body) = alice
            .call(method.clone(), path, Some(json!({"content": "mine now"})))
            .await;
        assert!(matches!(status, 403 | 404), "{method} {path}: {status} {body}");
        assert_error(&body, path);
        assert!(
            body.get("history").is_none() && body.get("session").is_none(),
            "{path}: {body}"
        );
    }

    // Bob's session is untouched.
    let (_, session) = bob.get(&format!("/api/sessions/{bobs}")).await;
    assert_eq!(
        (session["status"].as_str(), session["messageCount"].as_i64()),
        (Some("active"), Some(2))
    );
    Ok(())
}

#[tokio::test]
async fn legacy_errors_are_strings_with_the_documented_status() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let (mut client, _) = log_in(&stack, "alice").await;
    let unknown = uuid::Uuid::new_v4().to_string();

    // Unknown sessions are 404 with the id; none is made up for a message.
    for (method, path) in [
        (Method::GET, format!("/api/sessions/{unknown}")),
        (Method::POST, format!("/api/sessions/{unknown}/resume")),
        (Method::POST, format!("/api/sessions/{unknown}/resolve")),
        (Method::DELETE, format!("/api/sessions/{unknown}")),
        (Method::GET, format!("/api/sessions/{unknown}/history")),
        (Method::GET, "/api/sessions/not-a-uuid".to_owned()),
    ] {
        let (status, body) = client.call(method.clone(), &path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"], "Session not found", "{path}");
        assert!(body["sessionId"].is_string(), "{path}: {body}");
    }
    client.session = Some(unknown.clone());
    let (status, body) = client.post("/api/chat/message", json!({"content": "hi"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("Session not found")),
        "{body}"
    );
    let (_, list) = client.get("/api/agents").await;
    assert!(list["agents"].is_array());

    // Bad input is 400 with a string error.
    client.session = None;
    let (status, body) = client.post("/api/chat/message", json!({"content": "hi"})).await;
    assert_eq!(status, 400, "no session id: {body}");
    assert_error(&body, "no session id");
    let (_, created) = client.post("/api/sessions", json!({})).await;
    client.session = created["sessionId"].as_str().map(str::to_owned);
    for bad in [
        json!({"type": "text"}),
        json!({"content": "   "}),
        json!({"content": 5}),
    ] {
        let (status, body) = client.post("/api/chat/message", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_error(&body, "bad content");
    }
    let malformed = stack
        .http
        .post(stack.url("/api/sessions"))
        .bearer_auth(&client.token)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await?;
    let status = malformed.status().as_u16();
    let body: Value = malformed.json().await?;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "malformed JSON");
    let (status, body) = client
        .post("/api/chat/message", json!({"content": "x".repeat(20_000)}))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_error(&body, "too large");

    // An unknown route says so, with the path and method.
    let (status, body) = client.get("/api/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(
        (
            body["error"].as_str(),
            body["path"].as_str(),
            body["method"].as_str()
        ),
        (Some("Endpoint not found"), Some("/api/nothing-here"), Some("GET"))
    );

    Ok(())
}

#[tokio::test]
async fn legacy_sends_over_the_message_limit_get_429_with_retry_after() -> anyhow::Result<()> {
    // Arrange: one message per window.
    let stack = TestStack::spawn_with(|s| s.message_rate_limit = nz(1)).await?;
    let (mut client, _) = log_in(&stack, "alice").await;
    let (_, created) = client.post("/api/sessions", json!({})).await;
    client.session = created["sessionId"].as_str().map(str::to_owned);

    // Act
    let (status, _) = client
        .post("/api/chat/message", json!({"content": "first"}))
        .await;
    let response = stack
        .http
        .post(stack.url("/api/chat/message"))
        .bearer_auth(&client.token)
        .header("x-session-id", client.session.as_deref().unwrap())
        .json(&json!({"content": "second"}))
        .send()
        .await?;

    // Assert
    assert_eq!(status, 200);
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await?;
    assert_error(&body, "rate limited");
    assert!(
        body["message"].is_string() && body["retryAfter"].as_u64().is_some_and(|s| s >= 1),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn health_answers_without_a_token_on_every_legacy_path() -> anyhow::Result<()> {
    let stack = TestStack::spawn().await?;
    for path in [
        "/health",
        "/health/health",
        "/health/status",
        "/health/metrics",
        "/api/health/health",
    ] {
        let body = common::eventually(path, || async {
            let response = stack.http.get(stack.url(path)).send().await.ok()?;
            (response.status() == 200).then_some(())?;
            response.json::<Value>().await.ok()
        })
        .await;
        assert_eq!(body["status"], "healthy", "{path}: {body}");
        assert!(body["uptime"].is_u64(), "{body}");
        let text = body.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("http://"),
            "no addresses: {text}"
        );
        let fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
        assert!(
            fields
                .iter()
                .all(|f| ["status", "service", "version", "uptime", "timestamp"].contains(&f.as_str())),
            "{path}: only the health fields: {fields:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn auth_status_and_validate_answer_in_the_legacy_shape_and_token_minting_is_not_served()
-> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let (alice, alice_id) = log_in(&stack, "alice").await;
    let anonymous = LegacyClient {
        stack: &stack,
        token: String::new(),
        session: None,
    };

    // `/auth/status` needs a token and tells no internals.
    let (status, refused) = anonymous.get("/auth/status").await;
    assert_eq!(status, 401, "{refused}");
    assert_error(&refused, "status without a token");
    let (status, body) = alice.get("/auth/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert!(
        body["service"].is_string() && body["features"].is_object(),
        "{body}"
    );
    assert_eq!(body["configuration"]["tokenType"], "Bearer");
    let text = body.to_string();
    for secret in ["127.0.0.1", "http://", "secret", "postgres", "sqlite", "redis"] {
        assert!(!text.to_lowercase().contains(secret), "{secret} in {text}");
    }

    // `/auth/validate {token}` tells a good token from a bad one.
    let (status, valid) = anonymous
        .post("/auth/validate", json!({"token": alice.token}))
        .await;
    assert_eq!(status, 200, "{valid}");
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["userId"], alice_id.as_str());
    assert_date(&valid["issued"], "issued");
    assert_date(&valid["expires"], "expires");
    let (status, invalid) = anonymous
        .post("/auth/validate", json!({"token": "not.a.token"}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(invalid["valid"], false);
    assert_error(&invalid, "an invalid token");

    // Minting tokens for any user id and the public agent call stay unserved.
    for path in ["/auth/token", "/api/process"] {
        let (status, body) = alice.post(path, json!({"userId": "someone-else"})).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"], "Endpoint not found", "{body}");
    }
    Ok(())
}

#[tokio::test]
async fn a_signed_out_token_is_no_longer_valid_on_legacy_routes() -> anyhow::Result<()> {
    // Arrange: alice logs in twice through the legacy login.
    let stack = TestStack::spawn().await?;
    stack.register("alice").await?;
    let login = || async {
        let body: Value = stack
            .http
            .post(stack.url("/auth/login"))
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(body["data"]["tokens"].clone())
    };
    let laptop = login().await?;
    let phone = login().await?;
    let client = |tokens: &Value| LegacyClient {
        stack: &stack,
        token: tokens["accessToken"].as_str().unwrap().to_owned(),
        session: None,
    };

    // Act
    let (status, _) = client(&laptop)
        .post("/auth/logout", json!({"refreshToken": laptop["refreshToken"]}))
        .await;
    assert_eq!(status, 200);

    // Assert: routes that reach chat-core and the ones that only describe
    // the service alike.
    for path in ["/api/agents", "/api", "/auth/status"] {
        let (status, refused) = client(&laptop).get(path).await;
        assert_eq!(status, 401, "{path}: {refused}");
        assert_error(&refused, "a signed-out token");
        let (status, _) = client(&phone).get(path).await;
        assert_eq!(status, 200, "{path}: the other sign-in keeps working");
    }
    let (_, validated) = client(&laptop)
        .post("/auth/validate", json!({"token": laptop["accessToken"]}))
        .await;
    assert_eq!(validated["valid"], false, "{validated}");
    Ok(())
}

#[tokio::test]
async fn legacy_login_refresh_and_logout_follow_the_v1_rules() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    stack.register("alice").await?;
    let login = |password: &'static str| {
        stack
            .http
            .post(stack.url("/auth/login"))
            .json(&json!({"username": "alice", "password": password}))
            .send()
    };

    // A wrong password is 401 with a string error.
    let refused = login("wrong password").await?;
    assert_eq!(refused.status(), 401);
    assert_error(&refused.json().await?, "bad password");

    // Refresh returns new tokens in `data.tokens`; the spent token is refused.
    let body: Value = login(PASSWORD).await?.json().await?;
    let refresh_token = body["data"]["tokens"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = |token: String| {
        stack
            .http
            .post(stack.url("/auth/refresh"))
            .json(&json!({"refreshToken": token}))
            .send()
    };
    let refreshed = refresh(refresh_token.clone()).await?;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await?;
    let fresh = refreshed["data"]["tokens"]["accessToken"].as_str().unwrap();
    let agents = stack
        .http
        .get(stack.url("/api/agents"))
        .bearer_auth(fresh)
        .send()
        .await?;
    assert_eq!(agents.status(), 200, "the fresh token works");
    let reused = refresh(refresh_token).await?;
    assert_eq!(reused.status(), 401);
    assert_error(&reused.json().await?, "reused refresh token");

    // Logout revokes the refresh token.
    let current = refreshed["data"]["tokens"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let logout = stack
        .http
        .post(stack.url("/auth/logout"))
        .json(&json!({"refreshToken": current}))
        .send()
        .await?;
    assert_eq!(logout.status(), 200);
    assert_eq!(refresh(current).await?.status(), 401);
    Ok(())
}

#[tokio::test]
async fn agents_carry_display_names_and_pickers_see_only_listed_ones() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;

    // Act
    let v1: Value = stack
        .http
        .get(stack.url("/api/v1/agents"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let legacy: Value = stack
        .http
        .get(stack.url("/api/agents"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;

    // Assert: every agent is there, the specialists unlisted.
    let agents = v1["agents"].as_array().unwrap();
    let mut listed: Vec<&str> = agents
        .iter()
        .filter(|a| a["listed"] == true)
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ["bank", "echo"]);
    let bank = agents.iter().find(|a| a["name"] == "bank").unwrap();
    assert_eq!(
        (bank["display_name"].as_str(), bank["kind"].as_str()),
        (Some("Banking assistant"), Some("router"))
    );
    assert!(
        agents
            .iter()
            .any(|a| a["name"] == "balances" && a["listed"] == false)
    );
    let bank = legacy["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "bank")
        .unwrap();
    assert_eq!(
        (
            bank["name"].as_str(),
            bank["type"].as_str(),
            bank["listed"].as_bool()
        ),
        (Some("Banking assistant"), Some("router"), Some(true))
    );
    assert_eq!(
        legacy["summary"]["totalAgents"].as_u64(),
        Some(agents.len() as u64)
    );
    Ok(())
}

#[tokio::test]
async fn messages_while_a_person_handles_the_session_are_stored_without_a_reply() -> anyhow::Result<()> {
    // Arrange: a session escalated to a person.
    let stack = TestStack::spawn().await?;
    let (mut client, _) = log_in(&stack, "alice").await;
    let (_, created) = client.post("/api/sessions", json!({})).await;
    client.session = created["sessionId"].as_str().map(str::to_owned);
    let (_, escalated) = client
        .post(
            "/api/chat/message",
            json!({"content": "I want to talk to a human"}),
        )
        .await;
    assert_eq!(escalated["agent"]["type"], "escalation", "{escalated}");

    // Act
    let (status, waiting) = client
        .post("/api/chat/message", json!({"content": "are you there?"}))
        .await;

    // Assert: stored, answered by no agent.
    assert_eq!(status, 200, "{waiting}");
    assert_eq!(waiting["message"]["content"], "are you there?");
    assert!(waiting["response"].is_null(), "{waiting}");
    let session_id = client.session.clone().unwrap();
    let (_, history) = client.get(&format!("/api/sessions/{session_id}/history")).await;
    assert_eq!(history["count"], 3, "{history}");
    let (_, session) = client.get(&format!("/api/sessions/{session_id}")).await;
    assert_eq!(
        (session["status"].as_str(), session["isActive"].as_bool()),
        (Some("pending"), Some(true))
    );
    // The person handling it resolves it, not the user.
    let (status, refused) = client
        .post(&format!("/api/sessions/{session_id}/resolve"), json!({}))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_error(&refused, "resolving a pending session");
    Ok(())
}

#[tokio::test]
async fn naughty_input_on_legacy_routes_gets_string_errors_and_never_a_500() -> anyhow::Result<()> {
    // Arrange: limits out of the way; alice with a session, bob beside her.
    let stack = TestStack::spawn_with(|s| {
        s.rate_limit_max_requests = nz(1_000_000);
        s.auth_rate_limit_max = nz(1_000_000);
        s.message_rate_limit = nz(1_000_000);
    })
    .await?;
    let (alice, alice_id) = log_in(&stack, "alice").await;
    let (bob, _) = log_in(&stack, "bob").await;
    let (_, created) = alice.post("/api/sessions", json!({})).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let routes: Vec<(Method, String)> = vec![
        (Method::POST, "/auth/login".into()),
        (Method::POST, "/auth/refresh".into()),
        (Method::POST, "/auth/logout".into()),
        (Method::POST, "/auth/validate".into()),
        (Method::GET, "/auth/status".into()),
        (
            Method::GET,
            format!("/api/users/{alice_id}/sessions?type=unresolved"),
        ),
        (Method::POST, "/api/sessions".into()),
        (Method::GET, format!("/api/sessions/{id}")),
        (Method::DELETE, format!("/api/sessions/{id}")),
        (Method::POST, format!("/api/sessions/{id}/resume")),
        (Method::POST, format!("/api/sessions/{id}/resolve")),
        (
            Method::GET,
            format!("/api/sessions/{id}/history?offset=0&limit=5"),
        ),
        (Method::POST, format!("/api/sessions/{id}/messages")),
        (Method::POST, "/api/chat/message".into()),
        (Method::GET, format!("/api/chat/history?sessionId={id}")),
    ];
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<(&str, &str, Vec<u8>)> = vec![
        ("invalid UTF-8", "application/json", vec![b'{', 0xff, 0xfe, b'}']),
        ("10,000 deep", "application/json", deep.into_bytes()),
        ("over the body limit", "application/json", vec![b' '; 64 * 1024 + 1]),
        ("not JSON", "text/plain", b"hello".to_vec()),
        (
            "wrong types",
            "application/json",
            json!({"content": [1], "message": {}, "metadata": "x", "notes": 5, "reason": {},
                   "refreshToken": 5, "username": 5, "password": [], "type": 7, "sessionId": 9})
            .to_string()
            .into_bytes(),
        ),
        (
            "control characters and NUL",
            "application/json",
            json!({"content": "a\u{0}b", "notes": "\u{0}", "reason": "\u{0}\u{1b}", "metadata": {"k\u{0}": "v"},
                   "username": "a\u{0}", "password": "\u{0}", "refreshToken": "\u{0}"})
            .to_string()
            .into_bytes(),
        ),
    ];
    let mut failures = Vec::new();

    // Act + assert: every route with every body, and odd ids in the path and header.
    let mut check = |what: String, status: u16, content_type: Option<String>, text: String| {
        let json_error = serde_json::from_str::<Value>(&text).is_ok_and(|body| body["error"].is_string());
        let is_json = content_type.is_some_and(|c| c.starts_with("application/json"));
        if status >= 500 || (status >= 400 && !(json_error && is_json)) {
            failures.push(format!(
                "{what}: {status} {}",
                text.chars().take(200).collect::<String>()
            ));
        }
    };
    for (method, path) in &routes {
        for (what, content_type, body) in &bodies {
            let response = stack
                .http
                .request(method.clone(), stack.url(path))
                .bearer_auth(&alice.token)
                .header("content-type", *content_type)
                .header("x-session-id", id.as_str())
                .body(body.clone())
                .send()
                .await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            check(
                format!("{method} {path} with {what}"),
                status,
                content_type,
                response.text().await?,
            );
        }
    }
    let long = "a".repeat(10_000);
    for odd in [
        "..%2F..%2Fetc",
        "%00",
        "'%20OR%201=1",
        long.as_str(),
        "00000000-0000-0000-0000-000000000000",
    ] {
        for path in [
            format!("/api/sessions/{odd}"),
            format!("/api/sessions/{odd}/history"),
            format!("/api/users/{odd}/sessions"),
        ] {
            let response = stack
                .http
                .get(stack.url(&path))
                .bearer_auth(&alice.token)
                .send()
                .await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            check(
                format!("GET {}", path.chars().take(80).collect::<String>()),
                status,
                content_type,
                response.text().await?,
            );
        }
    }
    let response = stack
        .http
        .post(stack.url("/api/chat/message"))
        .bearer_auth(&alice.token)
        .header("x-session-id", http::HeaderValue::from_bytes(&[0xff, b'x'])?)
        .json(&json!({"content": "hi"}))
        .send()
        .await?;
    let status = response.status().as_u16();
    check(
        "X-Session-ID not UTF-8".into(),
        status,
        Some("application/json".into()),
        response.text().await?,
    );
    assert!(
        failures.is_empty(),
        "{} bad answers:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Bob was never disturbed.
    let (status, _) = bob.post("/api/sessions", json!({})).await;
    assert_eq!(status, 201);
    Ok(())
}

#[tokio::test]
async fn a_messages_type_and_metadata_are_stored_and_sessions_tell_when_they_expire() -> anyhow::Result<()> {
    // Arrange: sessions expire after an hour idle.
    let stack = TestStack::spawn_full(|s| s.session_ttl_secs = 3600, |_| {}, None).await?;
    let (mut client, _) = log_in(&stack, "alice").await;
    let (_, created) = client.post("/api/sessions", json!({})).await;
    let session_id = created["sessionId"].as_str().unwrap().to_owned();
    client.session = Some(session_id.clone());

    // Act: a message with a type and metadata, and one without either.
    let (status, turn) = client
        .post(
            "/api/chat/message",
            json!({"content": "What is my account balance?", "type": "quick_reply",
                   "metadata": {"channel": "web", "locale": "en-GB"}}),
        )
        .await;
    assert_eq!(status, 200, "{turn}");
    let (status, plain) = client
        .post("/api/chat/message", json!({"content": "I lost my card"}))
        .await;
    assert_eq!(status, 200, "{plain}");
    let (status, refused) = client
        .post(
            "/api/chat/message",
            json!({"content": "hi", "metadata": ["not", "an object"]}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_error(&refused, "metadata that is not an object");

    // Assert: the answer and the history both carry what was sent.
    assert_eq!(turn["message"]["type"], "quick_reply");
    assert_eq!(turn["message"]["metadata"]["channel"], "web");
    let (_, page) = client.get(&format!("/api/sessions/{session_id}/history")).await;
    let first = &page["history"][0];
    assert_eq!(first["message_type"], "quick_reply", "{first}");
    assert_eq!(first["metadata"]["locale"], "en-GB", "{first}");
    let third = &page["history"][2];
    assert_eq!(
        (third["content"].as_str(), third["message_type"].as_str()),
        (Some("I lost my card"), Some("text"))
    );
    assert_eq!(third["metadata"], json!({}));
    // `/api/v1` shows the same metadata.
    let v1: Value = stack
        .http
        .get(stack.url(&format!("/api/v1/sessions/{session_id}/messages")))
        .bearer_auth(&client.token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v1["messages"][0]["metadata"]["channel"], "web", "{v1}");
    assert!(
        v1["messages"][1].get("metadata").is_none(),
        "replies have none: {v1}"
    );

    // The session tells when it expires if left idle: its last activity plus an hour.
    let (_, session) = client.get(&format!("/api/sessions/{session_id}")).await;
    assert_date(&session["expiresAt"], "expiresAt");
    let at = |field: &str| chrono::DateTime::parse_from_rfc3339(session[field].as_str().unwrap()).unwrap();
    assert_eq!(
        (at("expiresAt") - at("lastActivity")).num_seconds(),
        3600,
        "{session}"
    );
    // An ended session no longer expires.
    client
        .call(
            Method::DELETE,
            &format!("/api/sessions/{session_id}"),
            Some(json!({})),
        )
        .await;
    let (_, ended) = client.get(&format!("/api/sessions/{session_id}")).await;
    assert!(ended["expiresAt"].is_null(), "{ended}");
    // No agent reports a confidence score.
    assert!(turn["agent"]["confidence"].is_null(), "{turn}");
    Ok(())
}
