//! Human handoff over the public API: the operator role (granted by an
//! administrator, never by oneself), the queue of sessions waiting for a
//! person (read, and pushed over operators' sockets), taking one, answering
//! it live with typing presence, handing it back and resolving it; the owner
//! going back to the assistant; and renaming a session.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestStack, WsClient, is_reply};

/// A user's session on the `bank` agent, escalated to a person by asking for one.
async fn escalated_session(stack: &TestStack, token: &str, ws: &mut WsClient) -> String {
    let session = stack.session(token, "bank").await.unwrap();
    ws.subscribe(&session).await;
    ws.send(
        json!({"type": "send", "session_id": session, "client_msg_id": "c1",
                   "content": "I want to speak to a person"}),
    )
    .await;
    ws.recv_until(|f| f["type"] == "session" && f["status"] == "pending_human")
        .await;
    session
}

async fn call(
    stack: &TestStack,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = stack.http.request(method, stack.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(stack: &TestStack, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call(stack, token, reqwest::Method::POST, path, Some(body)).await
}

async fn get(stack: &TestStack, token: &str, path: &str) -> (StatusCode, Value) {
    call(stack, token, reqwest::Method::GET, path, None).await
}

#[tokio::test]
async fn only_users_an_administrator_granted_are_operators() {
    let stack = TestStack::spawn().await.unwrap();
    let token = stack.user("olivia").await.unwrap();

    let (status, me) = get(&stack, &token, "/api/v1/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "olivia");
    assert_eq!(me["operator"], false);
    let (status, body) = get(&stack, &token, "/api/v1/operator/sessions").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    stack.grant_operator("olivia").await.unwrap();
    // The flag is read from the account on each call: the same token now works.
    let (_, me) = get(&stack, &token, "/api/v1/me").await;
    assert_eq!(me["operator"], true);
    let (status, body) = get(&stack, &token, "/api/v1/operator/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"], json!([]));

    assert!(
        stack.grant_operator("nobody").await.is_err(),
        "granting an unknown account must fail"
    );
}

#[tokio::test]
async fn an_operator_takes_a_waiting_session_answers_it_live_and_hands_it_back() {
    let stack = TestStack::spawn().await.unwrap();
    let user = stack.user("ursula").await.unwrap();
    let operator = stack.user("oscar").await.unwrap();
    let rival = stack.user("rita").await.unwrap();
    let outsider = stack.user("mallory").await.unwrap();
    stack.grant_operator("oscar").await.unwrap();
    stack.grant_operator("rita").await.unwrap();

    let mut user_ws = stack.ws(&user).await.unwrap();
    let session = escalated_session(&stack, &user, &mut user_ws).await;

    // The queue lists it with its owner and since when it waits; only
    // operators read it.
    let (status, queue) = get(&stack, &operator, "/api/v1/operator/sessions").await;
    assert_eq!(status, 200);
    let waiting = &queue["sessions"][0];
    assert_eq!(waiting["id"], session);
    assert_eq!(waiting["owner"], "ursula");
    assert_eq!(waiting["status"], "pending_human");
    assert!(waiting["waiting_since"].is_string(), "{waiting}");
    assert!(waiting.get("assignee").is_none(), "{waiting}");
    let (status, _) = get(&stack, &outsider, &format!("/api/v1/sessions/{session}/messages")).await;
    assert_eq!(
        status, 403,
        "a user who is no operator reads another user's session"
    );
    let (status, history) = get(&stack, &operator, &format!("/api/v1/sessions/{session}/messages")).await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"][0]["content"], "I want to speak to a person");

    // The operator follows the session over their own socket.
    let mut operator_ws = stack.ws(&operator).await.unwrap();
    operator_ws.subscribe(&session).await;

    // Taking it: one operator at a time; the user learns who.
    let base = format!("/api/v1/operator/sessions/{session}");
    let (status, taken) = post(&stack, &operator, &format!("{base}/claim"), json!({})).await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(taken["assignee"], "oscar");
    let frames = user_ws
        .recv_until(|f| f["type"] == "session" && f["assignee"] == "oscar")
        .await;
    assert_eq!(frames.last().unwrap()["status"], "pending_human");
    let (status, body) = post(&stack, &rival, &format!("{base}/claim"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("oscar"),
        "{body}"
    );
    let (status, _) = post(
        &stack,
        &rival,
        &format!("{base}/messages"),
        json!({"content": "hi"}),
    )
    .await;
    assert_eq!(status, 409, "only the operator holding a session answers it");

    // Typing presence, then the reply as a person, both live.
    let (status, _) = post(
        &stack,
        &operator,
        &format!("{base}/typing"),
        json!({"typing": true}),
    )
    .await;
    assert_eq!(status, 204);
    let frames = user_ws.recv_until(|f| f["type"] == "presence").await;
    assert_eq!(frames.last().unwrap()["name"], "oscar");
    assert_eq!(frames.last().unwrap()["typing"], true);
    let (status, reply) = post(
        &stack,
        &operator,
        &format!("{base}/messages"),
        json!({"content": "Hello, I'm Oscar. How can I help?", "client_msg_id": "op-1"}),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["role"], "human");
    assert_eq!(reply["agent"], "oscar");
    let frames = user_ws
        .recv_until(|f| f["type"] == "message" && f["message"]["role"] == "human")
        .await;
    assert_eq!(
        frames.last().unwrap()["message"]["content"],
        "Hello, I'm Oscar. How can I help?"
    );
    // A resent reply is the same message.
    let (_, again) = post(
        &stack,
        &operator,
        &format!("{base}/messages"),
        json!({"content": "Hello, I'm Oscar. How can I help?", "client_msg_id": "op-1"}),
    )
    .await;
    assert_eq!(again["seq"], reply["seq"]);

    // The user's answer reaches the operator's socket live.
    user_ws
        .send(json!({"type": "send", "session_id": session, "client_msg_id": "c2", "content": "My card was stolen"}))
        .await;
    let frames = operator_ws
        .recv_until(|f| f["type"] == "message" && f["message"]["content"] == "My card was stolen")
        .await;
    assert_eq!(frames.last().unwrap()["message"]["role"], "user");

    // Hand back: the bot answers again, and the session leaves the queue.
    let (status, back) = post(&stack, &operator, &format!("{base}/hand-back"), json!({})).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["status"], "active");
    assert!(back.get("assignee").is_none(), "{back}");
    user_ws
        .recv_until(|f| f["type"] == "session" && f["status"] == "active")
        .await;
    let (_, queue) = get(&stack, &operator, "/api/v1/operator/sessions").await;
    assert_eq!(queue["sessions"], json!([]));
    user_ws
        .send(json!({"type": "send", "session_id": session, "client_msg_id": "c3", "content": "what are your opening hours"}))
        .await;
    user_ws.recv_until(is_reply).await;
    let (status, _) = get(&stack, &operator, &format!("/api/v1/sessions/{session}/messages")).await;
    assert_eq!(status, 403, "a handed back session is its owner's again");
    let (status, _) = post(
        &stack,
        &operator,
        &format!("{base}/messages"),
        json!({"content": "still there?"}),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn an_operator_resolves_a_session_they_hold() {
    let stack = TestStack::spawn().await.unwrap();
    let user = stack.user("ursula").await.unwrap();
    let operator = stack.user("oscar").await.unwrap();
    stack.grant_operator("oscar").await.unwrap();
    let mut user_ws = stack.ws(&user).await.unwrap();
    let session = escalated_session(&stack, &user, &mut user_ws).await;
    let base = format!("/api/v1/operator/sessions/{session}");

    let (status, _) = post(&stack, &operator, &format!("{base}/resolve"), json!({})).await;
    assert_eq!(status, 409, "a session must be taken before it is resolved");
    post(&stack, &operator, &format!("{base}/claim"), json!({})).await;
    let (status, resolved) = post(
        &stack,
        &operator,
        &format!("{base}/resolve"),
        json!({"notes": "card blocked"}),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution_notes"], "card blocked");
    user_ws
        .recv_until(|f| f["type"] == "session" && f["status"] == "resolved")
        .await;
}

#[tokio::test]
async fn operator_routes_refuse_bad_input_and_non_operators_clearly() {
    let stack = TestStack::spawn().await.unwrap();
    let user = stack.user("ursula").await.unwrap();
    let operator = stack.user("oscar").await.unwrap();
    stack.grant_operator("oscar").await.unwrap();
    let mut user_ws = stack.ws(&user).await.unwrap();
    let waiting = escalated_session(&stack, &user, &mut user_ws).await;
    let active = stack.session(&user, "echo").await.unwrap();

    // Not an operator: forbidden, even on one's own session.
    let (status, _) = post(
        &stack,
        &user,
        &format!("/api/v1/operator/sessions/{waiting}/claim"),
        json!({}),
    )
    .await;
    assert_eq!(status, 403);
    // Only sessions waiting for a person can be taken; an operator cannot
    // read other users' sessions that are with an agent.
    let (status, body) = post(
        &stack,
        &operator,
        &format!("/api/v1/operator/sessions/{active}/claim"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = get(&stack, &operator, &format!("/api/v1/sessions/{active}")).await;
    assert_eq!(status, 403);

    post(
        &stack,
        &operator,
        &format!("/api/v1/operator/sessions/{waiting}/claim"),
        json!({}),
    )
    .await;
    let base = format!("/api/v1/operator/sessions/{waiting}");
    let (status, _) = post(
        &stack,
        &operator,
        &format!("{base}/messages"),
        json!({"content": "  "}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = post(
        &stack,
        &operator,
        &format!("{base}/messages"),
        json!({"content": "x".repeat(40_000)}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = post(
        &stack,
        &operator,
        &format!("{base}/messages"),
        json!({"content": "hi", "client_msg_id": "bad id!"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &stack,
        &operator,
        &format!("{base}/typing"),
        json!({"typing": "yes"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &stack,
        &operator,
        "/api/v1/operator/sessions/not-a-uuid/claim",
        json!({}),
    )
    .await;
    assert_eq!(status, 404, "anything but a UUID names no session");
    let missing = uuid::Uuid::new_v4();
    let (status, _) = post(
        &stack,
        &operator,
        &format!("/api/v1/operator/sessions/{missing}/claim"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &stack,
        &operator,
        &format!("{base}/hand-back"),
        json!({"agent": "no-such-agent"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = stack
        .http
        .get(stack.url("/api/v1/operator/sessions"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_owner_renames_a_session_and_nobody_else_can() {
    let stack = TestStack::spawn().await.unwrap();
    let owner = stack.user("ursula").await.unwrap();
    let other = stack.user("mallory").await.unwrap();
    let session = stack.session(&owner, "echo").await.unwrap();
    let path = format!("/api/v1/sessions/{session}");

    let (status, renamed) = call(
        &stack,
        &owner,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"title": "  Card trouble "})),
    )
    .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["title"], "Card trouble");
    let (_, fetched) = get(&stack, &owner, &path).await;
    assert_eq!(fetched["title"], "Card trouble");

    let (status, _) = call(
        &stack,
        &other,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"title": "mine"})),
    )
    .await;
    assert_eq!(status, 403);
    for bad in [
        json!({"title": ""}),
        json!({"title": "t".repeat(201)}),
        json!({"name": "x"}),
    ] {
        let (status, body) = call(&stack, &owner, reqwest::Method::PATCH, &path, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
}

#[tokio::test]
async fn the_owner_goes_back_to_the_assistant_while_waiting_or_with_a_person() {
    let stack = TestStack::spawn().await.unwrap();
    let user = stack.user("ursula").await.unwrap();
    let other = stack.user("mallory").await.unwrap();
    let operator = stack.user("oscar").await.unwrap();
    stack.grant_operator("oscar").await.unwrap();
    let mut user_ws = stack.ws(&user).await.unwrap();
    let session = escalated_session(&stack, &user, &mut user_ws).await;
    let back = format!("/api/v1/sessions/{session}/hand-back");

    // Nobody else may, not even an operator through the owner's route.
    let (status, body) = post(&stack, &other, &back, json!({})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(&stack, &operator, &back, json!({})).await;
    assert_eq!(status, 403, "{body}");

    // Waiting for a person: the owner cancels the escalation, the agent answers again.
    let (status, session_view) = post(&stack, &user, &back, json!({})).await;
    assert_eq!(status, 200, "{session_view}");
    assert_eq!(session_view["status"], "active");
    user_ws
        .recv_until(|f| f["type"] == "session" && f["status"] == "active")
        .await;
    let (_, queue) = get(&stack, &operator, "/api/v1/operator/sessions").await;
    assert_eq!(queue["sessions"], json!([]), "the session left the queue");
    user_ws
        .send(json!({"type": "send", "session_id": session, "client_msg_id": "c2", "content": "what are your opening hours"}))
        .await;
    user_ws.recv_until(is_reply).await;

    // With an agent already: nothing to go back from.
    let (status, body) = post(&stack, &user, &back, json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    // Taken by a person: the owner may leave them too; the operator's hold ends.
    user_ws
        .send(json!({"type": "send", "session_id": session, "client_msg_id": "c3", "content": "I want to speak to a person"}))
        .await;
    user_ws
        .recv_until(|f| f["type"] == "session" && f["status"] == "pending_human")
        .await;
    let base = format!("/api/v1/operator/sessions/{session}");
    let (status, _) = post(&stack, &operator, &format!("{base}/claim"), json!({})).await;
    assert_eq!(status, 200);
    let (status, session_view) = post(&stack, &user, &back, json!({})).await;
    assert_eq!(status, 200, "{session_view}");
    assert_eq!(session_view["status"], "active");
    assert!(session_view.get("assignee").is_none(), "{session_view}");
    let (status, _) = post(
        &stack,
        &operator,
        &format!("{base}/messages"),
        json!({"content": "still there?"}),
    )
    .await;
    assert_eq!(status, 409, "the operator no longer holds the session");

    // Bad input: an unknown agent, a session that is not one, an ended one.
    let (status, _) = post(&stack, &user, &back, json!({"agent": "no-such-agent"})).await;
    assert_eq!(status, 400);
    let (status, _) = post(&stack, &user, "/api/v1/sessions/not-a-uuid/hand-back", json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &stack,
        &user,
        &format!("/api/v1/sessions/{session}/end"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(&stack, &user, &back, json!({})).await;
    assert_eq!(status, 409, "{body}");
}

/// The next `queue` frame on an operator's socket.
async fn next_queue(ws: &mut WsClient) -> Value {
    ws.recv_until(|f| f["type"] == "queue").await.pop().unwrap()
}

#[tokio::test]
async fn operators_sockets_receive_the_queue_as_it_changes() {
    let stack = TestStack::spawn().await.unwrap();
    let user = stack.user("ursula").await.unwrap();
    let operator = stack.user("oscar").await.unwrap();
    stack.grant_operator("oscar").await.unwrap();

    // Not an operator: refused.
    let mut user_ws = stack.ws(&user).await.unwrap();
    user_ws.send(json!({"type": "watch_queue"})).await;
    let refused = user_ws.recv_until(|f| f["type"] == "error").await.pop().unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // An operator: the whole queue first (empty), then each change.
    let mut operator_ws = stack.ws(&operator).await.unwrap();
    operator_ws.send(json!({"type": "watch_queue"})).await;
    let snapshot = next_queue(&mut operator_ws).await;
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["sessions"], json!([]));

    let session = escalated_session(&stack, &user, &mut user_ws).await;
    let entered = next_queue(&mut operator_ws).await;
    assert_eq!(entered["snapshot"], false, "{entered}");
    let waiting = &entered["sessions"][0];
    assert_eq!(waiting["id"], session);
    assert_eq!(waiting["owner"], "ursula");
    assert_eq!(waiting["status"], "pending_human");
    assert!(waiting["waiting_since"].is_string(), "{waiting}");
    assert!(waiting.get("assignee").is_none(), "{waiting}");

    // Taken: it stays in the queue, marked with who took it.
    let base = format!("/api/v1/operator/sessions/{session}");
    post(&stack, &operator, &format!("{base}/claim"), json!({})).await;
    let taken = next_queue(&mut operator_ws).await;
    assert_eq!(taken["sessions"][0]["id"], session, "{taken}");
    assert_eq!(taken["sessions"][0]["assignee"], "oscar", "{taken}");

    // Handed back (here by its owner): it leaves the queue.
    post(
        &stack,
        &user,
        &format!("/api/v1/sessions/{session}/hand-back"),
        json!({}),
    )
    .await;
    let left = next_queue(&mut operator_ws).await;
    assert_eq!(left["removed"], json!([session]), "{left}");
    assert_eq!(left["sessions"], json!([]), "{left}");

    // A session deleted while waiting leaves it too; a session that was
    // never queued is never reported.
    let other = stack.session(&user, "echo").await.unwrap();
    post(&stack, &user, &format!("/api/v1/sessions/{other}/end"), json!({})).await;
    let deleted = escalated_session(&stack, &user, &mut stack.ws(&user).await.unwrap()).await;
    let entered = next_queue(&mut operator_ws).await;
    assert_eq!(entered["sessions"][0]["id"], deleted, "{entered}");
    call(
        &stack,
        &user,
        reqwest::Method::DELETE,
        &format!("/api/v1/sessions/{deleted}"),
        None,
    )
    .await;
    let left = next_queue(&mut operator_ws).await;
    assert_eq!(left["removed"], json!([deleted]), "{left}");

    // Watching again starts over with the whole queue.
    let waiting = escalated_session(&stack, &user, &mut stack.ws(&user).await.unwrap()).await;
    next_queue(&mut operator_ws).await;
    operator_ws.send(json!({"type": "watch_queue"})).await;
    let snapshot = next_queue(&mut operator_ws).await;
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["sessions"][0]["id"], waiting, "{snapshot}");

    // A revoked operator stops receiving at the next change.
    stack.revoke_operator("oscar").await.unwrap();
    post(
        &stack,
        &user,
        &format!("/api/v1/sessions/{waiting}/hand-back"),
        json!({}),
    )
    .await;
    let ended = operator_ws
        .recv_until(|f| f["type"] == "error" || f["type"] == "queue")
        .await
        .pop()
        .unwrap();
    assert_eq!(ended["code"], "forbidden", "{ended}");
}
