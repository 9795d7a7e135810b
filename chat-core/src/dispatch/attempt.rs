//! One attempt of a run as a state machine fed by the worker's events: it
//! gathers the reply, the answering agent, handoffs and tool calls, and says
//! what each event means for subscribers. No I/O happens here; the runner
//! relays, stores and publishes.

use chat_proto::agent::v1::{self as agent, run_event::Event as AgentEvent};

use crate::domain::{HUMAN_AGENT, RunErrorCode, RunFailure, ToolCallRecord, now_ms};

/// How an attempt ended, before it is recorded.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Reply(Reply),
    Failed {
        failure: RunFailure,
        retryable: bool,
    },
    Cancelled,
    /// The lease was lost (taken over, or the run cancelled elsewhere).
    LostLease,
}

impl Outcome {
    pub(super) fn failed(failure: RunFailure, retryable: bool) -> Self {
        Self::Failed { failure, retryable }
    }
}

/// A finished reply, ready to be stored.
#[derive(Debug, PartialEq)]
pub(super) struct Reply {
    pub content: String,
    pub first_delta_at: Option<i64>,
    /// The agent that answered: the run's, or the last one handed to.
    pub agent: String,
    /// The conversation was handed to a person.
    pub escalated: bool,
    /// The tool calls made for the reply, with their results.
    pub tool_calls: Vec<ToolCallRecord>,
}

/// What a worker event means for the session's subscribers.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Relay this text as the next delta; `first` for the attempt's first one.
    Delta {
        text: String,
        first: bool,
    },
    Handoff {
        from: String,
        to: String,
        reason: String,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments_json: String,
    },
    ToolResult {
        call_id: String,
        content: String,
    },
    /// Nothing to relay.
    Nothing,
    /// The attempt is over.
    Done(Outcome),
}

/// The state of one attempt.
#[derive(Debug)]
pub(super) struct Attempt {
    text: String,
    first_delta_at: Option<i64>,
    answering: String,
    escalated: bool,
    tool_calls: Vec<ToolCallRecord>,
}

/// Whether a failed call to a worker may succeed on another attempt (or worker).
pub(super) fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    !matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

impl Attempt {
    /// A new attempt answered by `agent` until a handoff says otherwise.
    pub(super) fn new(agent: &str) -> Self {
        Self {
            text: String::new(),
            first_delta_at: None,
            answering: agent.to_owned(),
            escalated: false,
            tool_calls: Vec::new(),
        }
    }

    /// Takes the next item of the worker's stream (`None` when it ended).
    pub(super) fn on_item(&mut self, item: Option<Result<agent::RunEvent, tonic::Status>>) -> Step {
        match item {
            Some(Ok(agent::RunEvent { event: Some(event) })) => self.on_event(event),
            Some(Ok(agent::RunEvent { event: None })) => Step::Nothing,
            Some(Err(status)) => Step::Done(Outcome::failed(
                RunFailure::new(
                    RunErrorCode::WorkerUnavailable,
                    format!("agent-worker failed: {:?}: {}", status.code(), status.message()),
                ),
                retryable(&status),
            )),
            None => Step::Done(Outcome::failed(
                RunFailure::new(
                    RunErrorCode::WorkerUnavailable,
                    "agent-worker ended the run without a reply",
                ),
                true,
            )),
        }
    }

    fn on_event(&mut self, event: AgentEvent) -> Step {
        match event {
            AgentEvent::Delta(delta) => {
                if delta.text.is_empty() {
                    return Step::Nothing;
                }
                let first = self.first_delta_at.is_none();
                self.first_delta_at.get_or_insert_with(now_ms);
                self.text.push_str(&delta.text);
                Step::Delta {
                    text: delta.text,
                    first,
                }
            }
            AgentEvent::Final(done) => {
                let text = std::mem::take(&mut self.text);
                Step::Done(Outcome::Reply(Reply {
                    content: if done.content.is_empty() {
                        text
                    } else {
                        done.content
                    },
                    first_delta_at: self.first_delta_at,
                    agent: std::mem::take(&mut self.answering),
                    escalated: self.escalated,
                    tool_calls: std::mem::take(&mut self.tool_calls),
                }))
            }
            AgentEvent::Error(error) => Step::Done(Outcome::failed(
                RunFailure::from_worker(&error.code, &error.message),
                error.retryable,
            )),
            AgentEvent::Handoff(handoff) => {
                let from = self.answering.clone();
                if handoff.to_agent == HUMAN_AGENT {
                    self.escalated = true;
                } else {
                    self.answering = handoff.to_agent.clone();
                }
                Step::Handoff {
                    from,
                    to: handoff.to_agent,
                    reason: handoff.reason,
                }
            }
            AgentEvent::ToolCall(call) => {
                self.tool_calls.push(ToolCallRecord::new(
                    call.call_id.clone(),
                    call.name.clone(),
                    &call.arguments_json,
                ));
                Step::ToolCall {
                    call_id: call.call_id,
                    name: call.name,
                    arguments_json: call.arguments_json,
                }
            }
            AgentEvent::ToolResult(result) => {
                if let Some(call) = self
                    .tool_calls
                    .iter_mut()
                    .rev()
                    .find(|c| c.call_id == result.call_id)
                {
                    call.result = Some(result.content.clone());
                }
                Step::ToolResult {
                    call_id: result.call_id,
                    content: result.content,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(event: AgentEvent) -> Option<Result<agent::RunEvent, tonic::Status>> {
        Some(Ok(agent::RunEvent { event: Some(event) }))
    }

    fn delta(text: &str) -> Option<Result<agent::RunEvent, tonic::Status>> {
        item(AgentEvent::Delta(agent::DeltaEvent { text: text.into() }))
    }

    fn finish(content: &str) -> Option<Result<agent::RunEvent, tonic::Status>> {
        item(AgentEvent::Final(agent::FinalEvent {
            content: content.into(),
        }))
    }

    fn handoff(to: &str) -> Option<Result<agent::RunEvent, tonic::Status>> {
        item(AgentEvent::Handoff(agent::HandoffEvent {
            to_agent: to.into(),
            reason: "why".into(),
        }))
    }

    fn reply(step: Step) -> Reply {
        match step {
            Step::Done(Outcome::Reply(reply)) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn deltas_are_relayed_and_make_the_reply_when_the_final_event_has_no_content() {
        let mut attempt = Attempt::new("echo");
        assert_eq!(
            attempt.on_item(delta("hel")),
            Step::Delta {
                text: "hel".into(),
                first: true
            }
        );
        assert_eq!(
            attempt.on_item(delta("")),
            Step::Nothing,
            "empty deltas are dropped"
        );
        assert_eq!(
            attempt.on_item(delta("lo")),
            Step::Delta {
                text: "lo".into(),
                first: false
            }
        );
        let reply = reply(attempt.on_item(finish("")));
        assert_eq!((reply.content.as_str(), reply.agent.as_str()), ("hello", "echo"));
        assert!(reply.first_delta_at.is_some());
        assert!(!reply.escalated && reply.tool_calls.is_empty());
    }

    #[test]
    fn the_final_content_wins_over_the_deltas() {
        let mut attempt = Attempt::new("echo");
        attempt.on_item(delta("draft"));
        assert_eq!(reply(attempt.on_item(finish("final"))).content, "final");
    }

    #[test]
    fn a_handoff_to_an_agent_changes_who_answers_and_to_a_human_escalates() {
        let mut attempt = Attempt::new("router");
        assert_eq!(
            attempt.on_item(handoff("bank")),
            Step::Handoff {
                from: "router".into(),
                to: "bank".into(),
                reason: "why".into()
            }
        );
        let step = attempt.on_item(handoff(HUMAN_AGENT));
        assert!(matches!(&step, Step::Handoff { from, .. } if from == "bank"));
        let reply = reply(attempt.on_item(finish("bye")));
        assert_eq!(reply.agent, "bank", "a person is not an agent");
        assert!(reply.escalated);
    }

    #[test]
    fn tool_results_attach_to_their_call_and_are_stored_typed() {
        let mut attempt = Attempt::new("tools");
        let call = attempt.on_item(item(AgentEvent::ToolCall(agent::ToolCallEvent {
            call_id: "c1".into(),
            name: "lookup".into(),
            arguments_json: r#"{"q":1}"#.into(),
        })));
        assert!(matches!(call, Step::ToolCall { ref call_id, .. } if call_id == "c1"));
        let result = attempt.on_item(item(AgentEvent::ToolResult(agent::ToolResultEvent {
            call_id: "c1".into(),
            content: "42".into(),
        })));
        assert_eq!(
            result,
            Step::ToolResult {
                call_id: "c1".into(),
                content: "42".into()
            }
        );
        let calls = reply(attempt.on_item(finish("done"))).tool_calls;
        assert_eq!(
            calls,
            vec![ToolCallRecord {
                arguments: serde_json::json!({"q": 1}),
                call_id: "c1".into(),
                name: "lookup".into(),
                result: Some("42".into()),
            }]
        );
    }

    #[test]
    fn errors_and_truncated_streams_fail_the_attempt() {
        let mut attempt = Attempt::new("echo");
        let error = attempt.on_item(item(AgentEvent::Error(agent::ErrorEvent {
            code: "boom".into(),
            message: "bad".into(),
            retryable: false,
        })));
        assert_eq!(
            error,
            Step::Done(Outcome::failed(
                RunFailure::new(RunErrorCode::AgentFailed, "boom: bad"),
                false
            ))
        );
        assert_eq!(
            Attempt::new("echo").on_item(None),
            Step::Done(Outcome::failed(
                RunFailure::new(
                    RunErrorCode::WorkerUnavailable,
                    "agent-worker ended the run without a reply"
                ),
                true
            ))
        );
        let refused = Attempt::new("echo").on_item(Some(Err(tonic::Status::not_found("no agent"))));
        assert!(matches!(
            refused,
            Step::Done(Outcome::Failed { retryable: false, .. })
        ));
        let reset = Attempt::new("echo").on_item(Some(Err(tonic::Status::unavailable("reset"))));
        assert!(matches!(
            reset,
            Step::Done(Outcome::Failed { retryable: true, .. })
        ));
    }
}
