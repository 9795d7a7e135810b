//! Chatting over the WebSocket: acks, streamed deltas, stored replies, resends, ordering.

use crate::common;

use common::{TestStack, is_reply, of_type};
use serde_json::json;

#[tokio::test]
async fn ws_send_streams_ack_deltas_and_stored_reply() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut ws = stack.ws(&token).await?;
    let subscribed = ws.subscribe(&session_id).await;
    assert_eq!(subscribed["last_seq"], 0);

    // Act
    let content = "hello there streaming world";
    ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": "c1", "content": content}))
        .await;
    let frames = ws.recv_until(is_reply).await;

    // Assert
    let ack = of_type(&frames, "ack");
    assert_eq!(ack.len(), 1, "{frames:?}");
    let ack = ack[0];
    assert_eq!(
        (ack["seq"].as_i64(), ack["client_msg_id"].as_str()),
        (Some(1), Some("c1"))
    );
    assert_eq!(ack["duplicate"], false);
    assert_eq!(frames[0]["type"], "ack", "the ack comes before the run's events");
    let run_id = ack["run_id"].as_str().expect("run_id");
    assert!(of_type(&frames, "run").iter().all(|r| r["run_id"] == run_id));
    assert!(
        !of_type(&frames, "run").is_empty(),
        "run status frames: {frames:?}"
    );

    let deltas = of_type(&frames, "delta");
    assert!(deltas.len() >= 2, "expected several deltas: {frames:?}");
    for (i, delta) in deltas.iter().enumerate() {
        assert_eq!(delta["index"].as_u64(), Some(i as u64));
        assert_eq!(delta["run_id"], run_id);
    }
    let streamed: String = deltas.iter().map(|d| d["text"].as_str().expect("text")).collect();

    let reply = &frames.last().expect("reply")["message"];
    assert_eq!(reply["seq"], 2);
    assert_eq!(reply["content"], streamed);
    assert_eq!(reply["content"], content);
    assert_eq!(reply["run_id"], run_id);

    let history = stack.history(&token, &session_id).await?;
    let summary: Vec<_> = history
        .iter()
        .map(|m| (m["seq"].as_i64(), m["role"].as_str()))
        .collect();
    assert_eq!(summary, [(Some(1), Some("user")), (Some(2), Some("assistant"))]);
    assert_eq!(history[0]["content"], content);
    assert_eq!(history[0]["client_msg_id"], "c1");
    Ok(())
}

#[tokio::test]
async fn resent_client_msg_id_returns_original_ack() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut ws = stack.ws(&token).await?;
    ws.subscribe(&session_id).await;
    let send = json!({"type": "send", "session_id": session_id, "client_msg_id": "same", "content": "only once please"});

    // Act
    ws.send(send.clone()).await;
    ws.send(send).await;
    let mut acks = 0;
    let mut replies = 0;
    let frames = ws
        .recv_until(|f| {
            acks += usize::from(f["type"] == "ack");
            replies += usize::from(is_reply(f));
            acks == 2 && replies == 1
        })
        .await;

    // Assert
    let acks = of_type(&frames, "ack");
    assert_eq!(acks[0]["message_id"], acks[1]["message_id"]);
    assert_eq!(acks[0]["seq"], acks[1]["seq"]);
    assert_eq!(acks[0]["run_id"], acks[1]["run_id"]);
    assert_eq!(
        (acks[0]["duplicate"].as_bool(), acks[1]["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    let history = stack.history(&token, &session_id).await?;
    let roles: Vec<_> = history.iter().map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, [Some("user"), Some("assistant")]);
    Ok(())
}

/// A runner still busy in the session claims the next run the moment it is
/// committed, possibly before its ack is queued: the ack must still come
/// first. Many back-to-back sends to a fast agent give that race many
/// chances.
#[tokio::test]
async fn the_ack_of_a_send_precedes_every_event_of_its_run() -> anyhow::Result<()> {
    const SENDS: usize = 40;
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut ws = stack.ws(&token).await?;
    ws.subscribe(&session_id).await;
    for i in 0..SENDS {
        ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": format!("c{i}"), "content": format!("turn {i}")}))
            .await;
    }
    let mut replies = 0;
    let frames = ws
        .recv_until(|f| {
            replies += usize::from(is_reply(f));
            replies == SENDS
        })
        .await;

    let mut acked = std::collections::HashSet::new();
    for frame in &frames {
        let run_id = match frame["type"].as_str() {
            Some("ack") => {
                acked.insert(frame["run_id"].as_str().expect("run_id").to_owned());
                continue;
            }
            Some("run" | "delta" | "handoff") => frame["run_id"].as_str(),
            Some("message") => frame["message"]["run_id"].as_str(),
            _ => None,
        };
        if let Some(run_id) = run_id {
            assert!(
                acked.contains(run_id),
                "an event of run {run_id} preceded its ack: {frame}"
            );
        }
    }
    assert_eq!(acked.len(), SENDS);
    Ok(())
}

#[tokio::test]
async fn back_to_back_messages_get_replies_in_order() -> anyhow::Result<()> {
    // Arrange
    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let mut ws = stack.ws(&token).await?;
    ws.subscribe(&session_id).await;
    let contents = ["first of three", "second one here", "third and last"];

    // Act
    for (i, content) in contents.iter().enumerate() {
        ws.send(json!({"type": "send", "session_id": session_id, "client_msg_id": format!("c{i}"), "content": content}))
            .await;
    }
    let mut replies = 0;
    let frames = ws
        .recv_until(|f| {
            replies += usize::from(is_reply(f));
            replies == 3
        })
        .await;

    // Assert: one run per message, answered in the order sent.
    let acks = of_type(&frames, "ack");
    let run_ids: Vec<_> = acks
        .iter()
        .map(|a| a["run_id"].as_str().expect("run_id"))
        .collect();
    assert_eq!(
        acks.iter()
            .map(|a| a["client_msg_id"].as_str())
            .collect::<Vec<_>>(),
        [Some("c0"), Some("c1"), Some("c2")]
    );
    let replies: Vec<_> = frames
        .iter()
        .filter(|f| is_reply(f))
        .map(|f| &f["message"])
        .collect();
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["run_id"], run_ids[i]);
        assert_eq!(reply["content"], contents[i]);
    }

    // Deltas of one run are never interleaved with another's.
    let mut delta_runs: Vec<&str> = Vec::new();
    for delta in of_type(&frames, "delta") {
        let run_id = delta["run_id"].as_str().expect("run_id");
        if delta_runs.last() != Some(&run_id) {
            assert!(
                !delta_runs.contains(&run_id),
                "deltas of run {run_id} interleaved: {frames:?}"
            );
            delta_runs.push(run_id);
        }
    }
    assert_eq!(delta_runs, run_ids);

    // Stored: seqs 1..=6 without gaps; every reply follows its own message.
    let history = stack.history(&token, &session_id).await?;
    let seqs: Vec<_> = history.iter().map(|m| m["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    for (i, content) in contents.iter().enumerate() {
        let user = history
            .iter()
            .find(|m| m["role"] == "user" && m["content"] == *content)
            .expect("user message");
        let reply = history
            .iter()
            .find(|m| m["role"] == "assistant" && m["run_id"] == run_ids[i])
            .expect("reply");
        assert_eq!(reply["content"], *content);
        assert!(reply["seq"].as_i64() > user["seq"].as_i64());
    }
    Ok(())
}

/// A gateway whose secret chat-core does not share (a deployment mistake):
/// the user's token is the gateway's own, but chat-core refuses the
/// gateway's calls, so the upgrade is refused with 401 rather than giving a
/// socket that silently does nothing.
#[tokio::test]
async fn ws_refused_by_chat_core_gets_401_before_the_upgrade() -> anyhow::Result<()> {
    // The gateway opens the socket's chat-core stream before upgrading, so a
    // token chat-core refuses (here: the gateway's own service token, signed
    // with another secret) is answered like any refused token.
    const OTHER_SECRET: &str = "a-different-secret-of-at-least-32-bytes!!";
    let stack = TestStack::spawn().await?;
    let addr = stack
        .spawn_gateway(|s| s.jwt_secret = Some(OTHER_SECRET.into()))
        .await?;
    let keys = chat_common::token::TokenKeys::new(OTHER_SECRET.as_bytes());
    let token = keys.sign(
        "someone",
        chat_common::token::Role::User,
        std::time::Duration::from_secs(60),
    )?;

    let url = format!("ws://{addr}/api/v1/ws?access_token={token}");
    let refused = tokio_tungstenite::connect_async(url).await.expect_err("refused");

    match refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 401),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn ws_without_chat_core_gets_unavailable_and_close_1011() -> anyhow::Result<()> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    // Arrange: a gateway whose chat-core is not there.
    let addr = common::spawn_gateway("http://127.0.0.1:1", |_| {}).await?;
    let keys = chat_common::token::TokenKeys::new(common::SECRET.as_bytes());
    let token = keys.sign(
        "someone",
        chat_common::token::Role::User,
        std::time::Duration::from_secs(60),
    )?;

    // Act
    let url = format!("ws://{addr}/api/v1/ws?access_token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let first = tokio::time::timeout(common::TIMEOUT, socket.next())
        .await?
        .expect("frame")?;
    let second = tokio::time::timeout(common::TIMEOUT, socket.next())
        .await?
        .expect("frame")?;

    // Assert
    let Message::Text(text) = first else {
        panic!("expected an error frame, got {first:?}")
    };
    let error: serde_json::Value = serde_json::from_str(text.as_str())?;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("unavailable"))
    );
    let Message::Close(Some(close)) = second else {
        panic!("expected a close frame, got {second:?}")
    };
    assert_eq!(u16::from(close.code), 1011);
    Ok(())
}

#[tokio::test]
async fn a_frame_over_the_limit_is_closed_with_1009() -> anyhow::Result<()> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    // Arrange: a small frame limit, and a neighbour on the same gateway.
    let stack = TestStack::spawn_with(|s| {
        s.max_content_bytes = 1024;
        s.max_ws_frame_bytes = 4096;
    })
    .await?;
    let token = stack.user("too_big").await?;
    let neighbour_token = stack.user("neighbour").await?;
    let mut neighbour = stack.ws(&neighbour_token).await?;
    let mut ws = stack.ws(&token).await?;

    // Act: one text frame larger than the limit.
    ws.send_raw(Message::text("x".repeat(10_000))).await;

    // Assert: RFC 6455's "message too big", not a bare disconnect (1005/1006).
    let close = loop {
        match tokio::time::timeout(common::TIMEOUT, ws.stream.next()).await? {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    // The neighbour is unaffected.
    neighbour.send(json!({"type": "ping"})).await;
    assert_eq!(neighbour.recv().await["type"], "pong");
    Ok(())
}

/// The page's way in: the token as a `bearer.<token>` subprotocol beside
/// `chat.v1`, nothing in the URL. The gateway answers `chat.v1` (never the
/// token) and the socket works; a bad token there is refused like any other.
#[tokio::test]
async fn the_access_token_can_travel_as_a_subprotocol_instead_of_in_the_url() -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let stack = TestStack::spawn().await?;
    let token = stack.user("alice").await?;
    let session_id = stack.session(&token, "echo").await?;
    let request = |protocols: String| -> anyhow::Result<_> {
        let mut request = format!("ws://{}/api/v1/ws", stack.addr).into_client_request()?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse()?);
        Ok(request)
    };

    let (socket, response) =
        tokio_tungstenite::connect_async(request(format!("chat.v1, bearer.{token}"))?).await?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
        Some("chat.v1".to_owned())
    );
    let mut ws = common::WsClient { stream: socket };
    let subscribed = ws.subscribe(&session_id).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");

    let refused = tokio_tungstenite::connect_async(request("chat.v1, bearer.not-a-token".into())?).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    Ok(())
}

fn run_ended(frame: &serde_json::Value) -> bool {
    frame["type"] == "run" && frame["status"] == "completed"
}

/// Sockets share the gateway's few `Multiplex` streams to chat-core (here
/// six sockets over three streams): each socket still gets exactly its own
/// frames, and one closing leaves the others, on its stream too, working.
#[tokio::test]
async fn sockets_sharing_streams_to_chat_core_each_get_only_their_own_frames() -> anyhow::Result<()> {
    let stack = TestStack::spawn_with(|s| {
        s.chat_core_mux_streams = 2;
        s.chat_core_mux_sockets_per_stream = 2;
    })
    .await?;
    let mut users = Vec::new();
    for name in ["mux_ann", "mux_ben", "mux_cy"] {
        let token = stack.user(name).await?;
        let session_id = stack.session(&token, "echo").await?;
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let mut ws = stack.ws(&token).await?;
            ws.subscribe(&session_id).await;
            sockets.push(ws);
        }
        users.push((session_id, sockets));
    }

    // Each user sends on their first socket; both their sockets see their reply.
    for (i, (session_id, sockets)) in users.iter_mut().enumerate() {
        let content = format!("mux turn {i}");
        let send =
            json!({"type": "send", "session_id": session_id, "client_msg_id": "c1", "content": content});
        sockets[0].send(send).await;
        for ws in sockets.iter_mut() {
            let frames = ws.recv_until(run_ended).await;
            assert!(
                frames
                    .iter()
                    .all(|f| f["session_id"].as_str().is_none_or(|s| s == session_id)
                        && f["message"]["session_id"]
                            .as_str()
                            .is_none_or(|s| s == session_id)),
                "a frame of another session: {frames:?}"
            );
            let replies: Vec<_> = frames.iter().filter(|f| is_reply(f)).collect();
            assert_eq!(replies.len(), 1, "{frames:?}");
            assert_eq!(replies[0]["message"]["content"], content);
        }
    }
    // Nothing else is waiting on any socket: a ping's pong comes next.
    for (_, sockets) in users.iter_mut() {
        for ws in sockets.iter_mut() {
            ws.send(json!({"type": "ping"})).await;
            assert_eq!(ws.recv().await, json!({"type": "pong"}));
        }
    }

    // One socket closes; its neighbour (same user, same stream or not) goes on.
    let (session_id, mut sockets) = users.remove(0);
    drop(sockets.remove(0));
    let ws = &mut sockets[0];
    let send =
        json!({"type": "send", "session_id": session_id, "client_msg_id": "c2", "content": "still here"});
    ws.send(send).await;
    let frames = ws.recv_until(is_reply).await;
    assert_eq!(frames.last().expect("reply")["message"]["content"], "still here");
    Ok(())
}
