//! The legacy Socket.IO events, driven by the official Socket.IO client
//! (`socket.io-client` under Node, through `socketio-client/bridge.js`)
//! against a real stack.
//!
//! Needs Node.js and `npm ci --prefix allinone/tests/gateway/socketio-client`;
//! without them the tests skip, or fail under `REQUIRE_ALL_TESTS` (as in CI).

use std::path::PathBuf;
use std::process::Stdio;

use crate::common;

use common::{TIMEOUT, TestStack, nz};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/socketio-client")
}

/// Node and the installed client, or a skip (a failure under `REQUIRE_ALL_TESTS`).
fn client_available() -> Option<()> {
    chat_testkit::needs::program("node", &["--version"], "install Node.js")?;
    if client_dir()
        .join("node_modules/socket.io-client/package.json")
        .is_file()
    {
        Some(())
    } else {
        chat_testkit::needs::missing("run `npm ci --prefix allinone/tests/gateway/socketio-client`")
    }
}

/// One Socket.IO client in a Node process.
struct SioClient {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    base: String,
}

impl SioClient {
    fn spawn(stack: &TestStack) -> Self {
        Self::spawn_at(stack.url(""))
    }

    /// A client of the gateway at `base` (`http://host:port`).
    fn spawn_at(base: String) -> Self {
        let mut child = tokio::process::Command::new("node")
            .arg(client_dir().join("bridge.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            _child: child,
            stdin,
            lines,
            base,
        }
    }

    async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to node");
        self.stdin.flush().await.expect("flush");
    }

    /// Connects over `transport` with `extra` options (auth, query, headers).
    async fn connect(&mut self, transport: &str, extra: Value) {
        let mut command = json!({"op": "connect", "url": self.base, "transports": [transport]});
        if let (Value::Object(command), Value::Object(extra)) = (&mut command, extra) {
            command.extend(extra);
        }
        self.command(command).await;
    }

    /// Connects with `token` in the handshake's `auth`; returns `connected`'s data.
    async fn connect_as(&mut self, token: &str) -> Value {
        self.connect("websocket", json!({"auth": {"token": token}})).await;
        self.until("connected").await.1
    }

    async fn emit(&mut self, event: &str, data: Value) {
        self.command(json!({"op": "emit", "event": event, "data": data}))
            .await;
    }

    async fn disconnect(&mut self) {
        self.command(json!({"op": "disconnect"})).await;
    }

    /// The next event the client saw: its name and data.
    async fn next(&mut self) -> (String, Value) {
        let line = tokio::time::timeout(TIMEOUT, self.lines.next_line())
            .await
            .expect("timed out waiting for a socket.io event")
            .expect("read from node")
            .expect("node exited");
        let mut seen: Value = serde_json::from_str(&line).expect("bridge line is JSON");
        (
            seen["event"].as_str().expect("event name").to_owned(),
            seen["data"].take(),
        )
    }

    /// Events up to the first `event`: the ones before it, and its data.
    async fn until(&mut self, event: &str) -> (Vec<(String, Value)>, Value) {
        let mut before = Vec::new();
        loop {
            let (name, data) = self.next().await;
            if name == event {
                return (before, data);
            }
            assert!(
                !matches!(name.as_str(), "disconnect" | "connect_error"),
                "waiting for {event}, got {name}: {data}"
            );
            before.push((name, data));
        }
    }
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

#[tokio::test]
async fn socketio_client_chats_with_the_legacy_events_and_resumes_after_reconnecting() -> anyhow::Result<()> {
    let Some(()) = client_available() else {
        return Ok(());
    };
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let mut a = SioClient::spawn(&stack);

    // Handshakes without a valid token are refused.
    a.connect("websocket", json!({})).await;
    assert_eq!(
        a.next().await,
        (
            "connect_error".into(),
            json!({"message": "authentication required"})
        )
    );
    a.connect("polling", json!({"auth": {"token": "not-a-token"}}))
        .await;
    let (event, data) = a.next().await;
    assert_eq!(
        (event.as_str(), data["message"].as_str()),
        ("connect_error", Some("access token is invalid or expired"))
    );

    // Act: connect, create a session.
    let connected = a.connect_as(&token).await;
    assert!(connected["socketId"].is_string(), "{connected}");
    let user_id = connected["userId"].as_str().expect("userId").to_owned();
    a.emit("createSession", json!({"metadata": {"channel": "socket"}}))
        .await;
    let (_, created) = a.until("sessionCreated").await;
    let session_id = created["sessionId"].as_str().expect("sessionId").to_owned();
    assert_eq!(created["session"]["agent"], "bank");
    assert_eq!(created["session"]["metadata"]["channel"], "socket");

    // A second socket of alice's, over long-polling with the token in the query, joins it.
    let mut b = SioClient::spawn(&stack);
    b.connect("polling", json!({"query": {"token": token}})).await;
    b.until("connected").await;
    b.emit("joinSession", json!({"sessionId": session_id})).await;
    let (_, joined) = b.until("sessionJoined").await;
    assert_eq!(
        (
            joined["sessionId"].as_str(),
            joined["conversationHistory"].as_array().map(Vec::len)
        ),
        (Some(session_id.as_str()), Some(0))
    );

    // Typing reaches the other socket of the session.
    a.emit("typing", json!({})).await;
    assert_eq!(b.until("userTyping").await.1["userId"], user_id.as_str());
    a.emit("stopTyping", json!({})).await;
    assert_eq!(b.until("userStoppedTyping").await.1["userId"], user_id.as_str());

    // sendMessage → messageReceived, the streamed deltas, newMessage; on both sockets.
    a.emit(
        "sendMessage",
        json!({"content": "What is my account balance?", "type": "text"}),
    )
    .await;
    let (_, received) = a.until("messageReceived").await;
    assert_eq!(received["status"], "processing");
    assert!(received["messageId"].is_string(), "{received}");
    let (before, turn) = a.until("newMessage").await;
    assert!(
        names(&before).contains(&"messageDelta"),
        "the reply streams first: {before:?}"
    );
    assert!(
        !names(&before).contains(&"userTyping"),
        "a socket is not told of its own typing"
    );
    assert_eq!(turn["sessionId"], session_id.as_str());
    assert_eq!(turn["message"]["content"], "What is my account balance?");
    assert_eq!(turn["message"]["id"], received["messageId"]);
    assert!(
        turn["response"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("account balance")),
        "{turn}"
    );
    assert_eq!(turn["agent"]["type"], "balances");
    assert_eq!(turn["agent"]["agentsInvolved"], json!(["bank", "balances"]));
    let (_, seen_by_b) = b.until("newMessage").await;
    assert_eq!(seen_by_b["response"]["id"], turn["response"]["id"]);

    a.emit("ping", Value::Null).await;
    assert!(a.until("pong").await.1["timestamp"].is_string());

    // Reconnect (token in the Authorization header now) and pick the session up again.
    a.disconnect().await;
    assert_eq!(a.until("disconnect").await.1["reason"], "io client disconnect");
    a.connect(
        "websocket",
        json!({"headers": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    a.until("connected").await;
    a.emit("joinSession", json!({"sessionId": session_id})).await;
    let (_, rejoined) = a.until("sessionJoined").await;
    let history = rejoined["conversationHistory"].as_array().expect("history array");
    let directions: Vec<&str> = history.iter().map(|m| m["direction"].as_str().unwrap()).collect();
    assert_eq!(directions, ["incoming", "outgoing"]);
    assert_eq!(history[0]["content"], "What is my account balance?");
    a.emit("sendMessage", json!({"content": "I want to talk to a human"}))
        .await;
    let (before, escalated) = a.until("newMessage").await;
    assert_eq!(escalated["agent"]["type"], "escalation");
    let updated = match before.into_iter().find(|(name, _)| name == "sessionUpdated") {
        Some((_, updated)) => updated,
        None => a.until("sessionUpdated").await.1,
    };
    assert_eq!(updated["status"], "pending");

    // endSession: ended, not erased; the socket has no session any more.
    a.emit("endSession", json!({"reason": "done"})).await;
    let (_, ended) = a.until("sessionEnded").await;
    assert_eq!(
        (ended["sessionId"].as_str(), ended["reason"].as_str()),
        (Some(session_id.as_str()), Some("done"))
    );
    a.emit("sendMessage", json!({"content": "anyone?"})).await;
    assert!(a.until("messageError").await.1["error"].is_string());
    let session: Value = stack
        .http
        .get(stack.url(&format!("/api/sessions/{session_id}")))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (session["status"].as_str(), session["messageCount"].as_i64()),
        (Some("terminated"), Some(4))
    );
    Ok(())
}

#[tokio::test]
async fn socketio_keeps_users_to_their_own_sessions() -> anyhow::Result<()> {
    let Some(()) = client_available() else {
        return Ok(());
    };
    // Arrange: alice's session with a message in it.
    let stack = TestStack::spawn().await?;
    let alice = stack.user("alice").await?;
    let bob = stack.user("bob").await?;
    let session_id = stack.session(&alice, "echo").await?;
    let mut client = SioClient::spawn(&stack);
    client.connect_as(&bob).await;

    // Act: bob asks for it, then talks without a session (a payload userId changes nothing).
    client
        .emit("joinSession", json!({"sessionId": session_id, "userId": "alice"}))
        .await;
    let (before, refused) = client.until("sessionError").await;
    client
        .emit("sendMessage", json!({"content": "hi", "sessionId": session_id}))
        .await;
    let (_, unsent) = client.until("messageError").await;

    // Assert
    assert!(refused["error"].is_string(), "{refused}");
    assert!(!names(&before).contains(&"sessionJoined"), "{before:?}");
    assert!(unsent["error"].is_string(), "{unsent}");
    assert!(
        stack.history(&alice, &session_id).await?.is_empty(),
        "nothing reached alice's session"
    );
    Ok(())
}

#[tokio::test]
async fn socketio_sends_share_the_message_rate_limit() -> anyhow::Result<()> {
    let Some(()) = client_available() else {
        return Ok(());
    };
    // Arrange: one message per window.
    let stack = TestStack::spawn_with(|s| s.message_rate_limit = nz(1)).await?;
    let token = stack.user("alice").await?;
    let mut client = SioClient::spawn(&stack);
    client.connect_as(&token).await;
    client.emit("createSession", json!({})).await;
    client.until("sessionCreated").await;

    // Act
    client.emit("sendMessage", json!({"content": "first"})).await;
    client.until("newMessage").await;
    client.emit("sendMessage", json!({"content": "second"})).await;
    let (_, limited) = client.until("messageError").await;

    // Assert: refused with a wait, and the socket stays usable.
    assert!(
        limited["retryAfter"].as_u64().is_some_and(|s| s >= 1),
        "{limited}"
    );
    client.emit("ping", json!({})).await;
    client.until("pong").await;
    Ok(())
}

#[tokio::test]
async fn socketio_token_expiry_warns_then_disconnects_unless_a_fresh_token_comes() -> anyhow::Result<()> {
    let Some(()) = client_available() else {
        return Ok(());
    };
    // Arrange: two-second tokens, three seconds of grace.
    let stack = TestStack::spawn_with(|s| {
        s.access_token_ttl_secs = 2;
        s.ws_token_grace_secs = 3;
    })
    .await?;
    let token = stack.user("alice").await?;
    stack.register("bob").await?;
    let mut client = SioClient::spawn(&stack);
    client.connect_as(&token).await;

    // The token expires: a warning.
    let (_, warning) = client.until("authenticationError").await;
    assert_eq!(warning["code"], "token_expired", "{warning}");

    // Another user's token is refused; a fresh one of alice's is taken.
    let bobs = stack.login("bob").await?["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    client.emit("authenticate", json!({"token": bobs})).await;
    let (_, refused) = client.until("authenticationError").await;
    assert_eq!(refused["error"], "the token belongs to another user");
    let fresh = stack.login("alice").await?["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .emit("authenticate", json!({"token": fresh, "userId": "bob"}))
        .await;
    let (_, renewed) = client.until("authenticationSuccess").await;
    assert_eq!(renewed["userId"], stack_user_id(&fresh));

    // The connection lives on until the fresh token expires in turn, then
    // closes after the grace period.
    let (before, warning) = client.until("authenticationError").await;
    assert_eq!(warning["code"], "token_expired", "{before:?}");
    let (_, closing) = client.until("authenticationError").await;
    assert_eq!(closing["error"], "access token expired");
    let (event, _) = client.next().await;
    assert_eq!(event, "disconnect");
    Ok(())
}

/// The subject of a token (its user id).
fn stack_user_id(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("three-part token");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("claims");
    claims["sub"].as_str().expect("sub").to_owned()
}

/// A Socket.IO connection takes a place under the per-user connection cap,
/// as a WebSocket does: over it the handshake is refused, and a place freed
/// by a disconnect is taken again.
#[tokio::test]
async fn socketio_connections_count_under_the_per_user_cap() -> anyhow::Result<()> {
    let Some(()) = client_available() else {
        return Ok(());
    };
    let stack = TestStack::spawn_with(|s| s.max_connections_per_user = 1).await?;
    let token = stack.user("alice").await?;
    let mut first = SioClient::spawn(&stack);
    first.connect_as(&token).await;

    let mut second = SioClient::spawn(&stack);
    second
        .connect("websocket", json!({"auth": {"token": token}}))
        .await;
    let (name, data) = first_outcome(&mut second).await;
    assert_eq!(name, "connect_error", "{data}");
    assert!(data.to_string().contains("too many open connections"), "{data}");

    first.disconnect().await;
    first.until("disconnect").await;
    common::eventually("the freed place to be taken", || {
        let (stack, token) = (&stack, token.clone());
        async move {
            let mut again = SioClient::spawn(stack);
            again
                .connect("websocket", json!({"auth": {"token": token}}))
                .await;
            (first_outcome(&mut again).await.0 == "connected").then_some(())
        }
    })
    .await;
    Ok(())
}

/// The first of `connected` and `connect_error` a connecting client sees.
async fn first_outcome(client: &mut SioClient) -> (String, Value) {
    loop {
        let (name, data) = client.next().await;
        if name == "connected" || name == "connect_error" {
            return (name, data);
        }
    }
}

#[tokio::test]
async fn typing_reaches_the_sessions_sockets_on_another_gateway() -> anyhow::Result<()> {
    let Some(()) = client_available() else {
        return Ok(());
    };
    // Arrange: alice's session, one socket on each of two gateways.
    let stack = TestStack::spawn().await?;
    let other_gateway = stack.spawn_gateway(|_| {}).await?;
    let token = stack.user("alice").await?;
    let mut here = SioClient::spawn(&stack);
    let user_id = here.connect_as(&token).await["userId"]
        .as_str()
        .expect("userId")
        .to_owned();
    here.emit("createSession", json!({})).await;
    let session_id = here.until("sessionCreated").await.1["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_owned();
    let mut there = SioClient::spawn_at(format!("http://{other_gateway}"));
    there.connect_as(&token).await;
    there.emit("joinSession", json!({"sessionId": session_id})).await;
    there.until("sessionJoined").await;

    // Act
    here.emit("typing", json!({})).await;
    here.emit("typing", json!({})).await;
    here.emit("stopTyping", json!({})).await;

    // Assert: the other gateway's socket hears both, once each, in order.
    let (before, typing) = there.until("userTyping").await;
    assert_eq!(
        (typing["userId"].as_str(), typing["sessionId"].as_str()),
        (Some(user_id.as_str()), Some(session_id.as_str()))
    );
    assert!(!names(&before).contains(&"userStoppedTyping"), "{before:?}");
    let (between, stopped) = there.until("userStoppedTyping").await;
    assert_eq!(stopped["userId"], user_id.as_str());
    assert!(
        !names(&between).contains(&"userTyping"),
        "a repeated typing is passed on once: {between:?}"
    );
    // The typing socket is not told of its own notices: when the other
    // socket's notice (published after them) reaches it, none came before.
    there.emit("stopTyping", json!({})).await;
    let (before, _) = here.until("userStoppedTyping").await;
    assert!(
        !names(&before).contains(&"userTyping"),
        "a socket is not told of its own typing: {before:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_signed_out_token_is_turned_away_right_after_the_handshake() -> anyhow::Result<()> {
    let Some(()) = client_available() else {
        return Ok(());
    };
    // Arrange: alice signs in, then out.
    let stack = TestStack::spawn().await?;
    stack.register("alice").await?;
    let pair = stack.login("alice").await?;
    let logout = stack
        .http
        .post(stack.url("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": pair["refresh_token"]}))
        .send()
        .await?;
    assert_eq!(logout.status(), 204);

    // Act
    let mut client = SioClient::spawn(&stack);
    client
        .connect("websocket", json!({"auth": {"token": pair["access_token"]}}))
        .await;

    // Assert: told why, then disconnected, never `connected`.
    let mut seen = Vec::new();
    loop {
        let (event, data) = client.next().await;
        if event == "disconnect" {
            break;
        }
        seen.push((event, data));
    }
    assert!(!names(&seen).contains(&"connected"), "{seen:?}");
    let (_, error) = seen
        .iter()
        .find(|(name, _)| name == "sessionError")
        .expect("a sessionError");
    assert_eq!(error["code"], "unauthenticated", "{error}");
    Ok(())
}
