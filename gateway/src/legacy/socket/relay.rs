//! A Socket.IO connection's `Connect` stream to chat-core: opened with the
//! handshake's token, relayed until the client goes, the gateway drains or
//! the token expires without a fresh one; each server frame becomes the
//! legacy event a client listens for.

use std::collections::VecDeque;
use std::sync::Arc;

use chat_proto::chat::v1 as pb;
use futures::StreamExt;
use pb::server_frame::Frame as ServerKind;
use pb::session_event::Event as EventKind;
use serde_json::json;
use socketioxide::extract::SocketRef;

use super::connection::{Connection, Upstream, emit, message_error};
use crate::error::PublicStatus;
use crate::legacy::views::{ChatTurn, incoming, now, outgoing, status, turn_agent};
use crate::routes::messages::HUMAN;
use crate::ws::{Expiry, TokenClock};

/// Turns remembered per connection; older ones are forgotten (their
/// replies then come without the user's message).
const MAX_TURNS: usize = 64;

/// Runs `connection` until it ends, then disconnects its socket.
pub async fn run(socket: SocketRef, connection: Arc<Connection>, upstream: Upstream) {
    let user = connection.user();
    let opened = match connection.state.stream_as(upstream.map(|frame| *frame), &user) {
        Ok(request) => connection
            .state
            .core
            .connect(request)
            .await
            .map_err(|s| PublicStatus::from(&s)),
        Err(error) => Err(PublicStatus {
            code: error.code,
            message: error.message.into_owned(),
            retry_after_ms: None,
        }),
    };
    drop(user);
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(status) => {
            emit(
                &socket,
                "sessionError",
                &json!({"error": status.message, "code": status.code.as_str()}),
            );
            let _ = socket.disconnect();
            return;
        }
    };
    emit(
        &socket,
        "connected",
        &json!({"socketId": socket.id.to_string(), "userId": connection.peer.user_id, "timestamp": now()}),
    );
    tracing::debug!(user_id = %connection.peer.user_id, "socket.io connected");
    let mut expires_at = connection.expires_at.subscribe();
    let mut clock = TokenClock::new(*expires_at.borrow_and_update(), connection.peer.token_grace);
    let expiry = tokio::time::sleep_until(clock.deadline());
    tokio::pin!(expiry);
    let shutdown = connection.state.shutdown.clone();
    loop {
        tokio::select! {
            () = connection.closed.cancelled() => return,
            () = shutdown.cancelled() => break,
            () = &mut expiry => match clock.elapsed() {
                Expiry::Warn => {
                    let grace = connection.peer.token_grace.as_secs();
                    let error = format!("access token expired; send authenticate {{token}} within {grace} s or the connection closes");
                    emit(&socket, "authenticationError", &json!({"error": error, "code": crate::ws::TOKEN_EXPIRED}));
                    expiry.as_mut().reset(clock.deadline());
                }
                Expiry::Close => {
                    emit(&socket, "authenticationError", &json!({"error": "access token expired", "code": crate::ws::TOKEN_EXPIRED}));
                    break;
                }
            },
            Ok(()) = expires_at.changed() => {
                clock = TokenClock::new(*expires_at.borrow_and_update(), connection.peer.token_grace);
                expiry.as_mut().reset(clock.deadline());
            }
            frame = stream.message() => match frame {
                Ok(Some(frame)) => on_frame(&socket, &connection, frame),
                Ok(None) => break,
                Err(status) => {
                    let public = PublicStatus::from(&status);
                    emit(&socket, "sessionError", &json!({"error": public.message, "code": public.code.as_str()}));
                    break;
                }
            },
        }
    }
    // The client reconnects (to any gateway) and joins its session again.
    let _ = socket.disconnect();
}

/// A message sent on this connection or seen in its session, until its run ends.
#[derive(Debug, Default)]
struct PendingTurn {
    run_id: String,
    /// The user's message (with the `type` and metadata it was stored with).
    message: Option<pb::Message>,
    agents: Vec<String>,
}

/// The runs in flight in a connection's session, to pair each reply with its message.
#[derive(Debug, Default)]
pub struct Turns {
    runs: VecDeque<PendingTurn>,
}

impl Turns {
    fn run(&mut self, run_id: &str) -> &mut PendingTurn {
        if let Some(index) = self.runs.iter().position(|t| t.run_id == run_id) {
            return &mut self.runs[index];
        }
        if self.runs.len() >= MAX_TURNS {
            self.runs.pop_front();
        }
        self.runs.push_back(PendingTurn {
            run_id: run_id.to_owned(),
            ..Default::default()
        });
        let last = self.runs.len() - 1;
        &mut self.runs[last]
    }

    fn finish(&mut self, run_id: &str) -> Option<PendingTurn> {
        let index = self.runs.iter().position(|t| t.run_id == run_id)?;
        self.runs.remove(index)
    }

    fn acked(&mut self, ack: &pb::Ack) {
        if ack.run_id.is_empty() {
            return;
        }
        let turn = self.run(&ack.run_id);
        if turn.message.is_none() {
            turn.message = ack.message.as_deref().cloned();
        }
    }
}

/// Tells the client what a frame from chat-core means for it.
fn on_frame(socket: &SocketRef, connection: &Connection, frame: pb::ServerFrame) {
    let Some(frame) = frame.frame else { return };
    let mut turns = connection
        .turns
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match frame {
        ServerKind::Ack(ack) => {
            turns.acked(&ack);
            emit(
                socket,
                "messageReceived",
                &json!({
                    "messageId": ack.message_id,
                    "sessionId": ack.session_id,
                    "sequenceNumber": ack.seq,
                    "status": "processing",
                    "timestamp": now(),
                }),
            );
        }
        ServerKind::Event(event) => on_event(socket, connection, &mut turns, event),
        ServerKind::Error(error) => {
            let message = if error.message.is_empty() {
                error.code.clone()
            } else {
                error.message
            };
            if error.client_msg_id.is_empty() {
                // A refused subscription's announcement is replaced by the error.
                connection.release_announcement(&error.session_id);
                emit(
                    socket,
                    "sessionError",
                    &json!({"error": message, "code": error.code, "sessionId": error.session_id}),
                );
            } else {
                let retry_after = Some(error.retry_after_ms).filter(|ms| *ms > 0);
                message_error(socket, &message, retry_after);
            }
        }
        ServerKind::Subscribed(subscribed) => {
            if let Some((event, data)) = connection.release_announcement(&subscribed.session_id) {
                emit(socket, event, &data);
            }
        }
        ServerKind::Unsubscribed(_) | ServerKind::Pong(_) | ServerKind::Queue(_) => {}
    }
}

fn on_event(socket: &SocketRef, connection: &Connection, turns: &mut Turns, event: pb::SessionEvent) {
    let user_id = connection.peer.user_id.as_str();
    match event.event {
        Some(EventKind::Message(message)) if message.message_role() == pb::MessageRole::User => {
            // Sent here (already known from its ack) or from another connection.
            if let Some(run_id) = message.run_id.clone().filter(|r| !r.is_empty()) {
                let turn = turns.run(&run_id);
                if turn.message.is_none() {
                    turn.message = Some(*message);
                }
            }
        }
        Some(EventKind::Message(reply)) => {
            let pending = reply.run_id.as_deref().and_then(|run_id| turns.finish(run_id));
            let (message, agents) = match pending {
                Some(turn) => (turn.message, turn.agents),
                None => (None, Vec::new()),
            };
            let mut agents = agents;
            if !reply.agent.is_empty() && agents.last() != Some(&reply.agent) {
                agents.push(reply.agent.clone());
            }
            let turn = ChatTurn {
                session_id: reply.session_id.clone(),
                message: message.map(|m| incoming(m, user_id)),
                agent: turn_agent(Some(&reply), agents),
                response: Some(outgoing(*reply, user_id)),
                timestamp: now(),
            };
            emit(
                socket,
                "newMessage",
                &serde_json::to_value(&turn).unwrap_or_default(),
            );
        }
        Some(EventKind::Delta(delta)) => emit(
            socket,
            "messageDelta",
            &json!({
                "sessionId": delta.session_id,
                "runId": delta.run_id,
                "index": delta.index,
                "text": delta.text,
                "attempt": delta.attempt,
            }),
        ),
        Some(EventKind::Handoff(handoff)) => {
            let turn = turns.run(&handoff.run_id);
            if turn.agents.is_empty() {
                turn.agents.push(handoff.from_agent.clone());
            }
            if handoff.to_agent != HUMAN {
                turn.agents.push(handoff.to_agent.clone());
            }
            emit(
                socket,
                "agentHandoff",
                &json!({
                    "sessionId": handoff.session_id,
                    "runId": handoff.run_id,
                    "fromAgent": handoff.from_agent,
                    "toAgent": handoff.to_agent,
                    "reason": handoff.reason,
                }),
            );
        }
        Some(EventKind::Run(run)) => {
            let terminal = run.status().is_terminal();
            if terminal {
                let pending = turns.finish(&run.run_id);
                if run.status() != pb::RunStatus::Completed {
                    let message_id = pending.and_then(|t| t.message).map(|m| m.id);
                    emit(
                        socket,
                        "messageError",
                        &json!({
                            "error": "the assistant could not answer this message; send it again",
                            "sessionId": run.session_id,
                            "messageId": message_id,
                            "runId": run.run_id,
                            "timestamp": now(),
                        }),
                    );
                }
            } else {
                let turn = turns.run(&run.run_id);
                if turn.agents.is_empty() && !run.agent.is_empty() {
                    turn.agents.push(run.agent);
                }
            }
        }
        Some(EventKind::Session(changed)) => emit(
            socket,
            "sessionUpdated",
            &json!({
                "sessionId": changed.session_id,
                "status": status(changed.session_status()),
                "agent": changed.agent,
                "timestamp": now(),
            }),
        ),
        // A user typing on another connection (on any gateway): the
        // session's other sockets hear of it, as they did on the replaced service.
        Some(EventKind::Presence(presence))
            if !presence.user_id.is_empty() && presence.origin != socket.id.to_string() =>
        {
            let event = if presence.typing {
                "userTyping"
            } else {
                "userStoppedTyping"
            };
            emit(
                socket,
                event,
                &json!({"userId": presence.user_id, "sessionId": presence.session_id}),
            );
        }
        // Tool calls and an operator's typing have no legacy event.
        Some(EventKind::ToolCall(_) | EventKind::ToolResult(_) | EventKind::Presence(_)) | None => {}
    }
}
