//! Domain types to protobuf messages.

use chat_proto::agent::v1 as agent;
use chat_proto::chat::v1 as pb;

use crate::domain::{Message, MessageRole, Run, RunStatus, Session, SessionStatus};

pub fn session(s: &Session) -> pb::Session {
    pb::Session {
        id: s.id.to_string(),
        owner_id: s.owner_id.to_string(),
        title: s.title.clone(),
        status: s.status.as_str().to_owned(),
        agent: s.agent.clone(),
        created_at_ms: s.created_at,
        updated_at_ms: s.updated_at,
        last_seq: s.last_seq,
        metadata_json: s.metadata.clone(),
        resolution_notes: s.resolution_notes.clone().unwrap_or_default(),
        concurrency: s.concurrency.map(|c| c.as_str().to_owned()).unwrap_or_default(),
        assignee: s.assignee.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
        waiting_since_ms: s.waiting_since.unwrap_or_default(),
        session_status: session_status(s.status).into(),
        // Known to the service, which sets it (`ChatCore::session_view`).
        expires_at_ms: 0,
    }
}

/// A session in the operators' queue, with its owner's username.
pub fn waiting_session(s: &Session, owner: &str) -> pb::WaitingSession {
    pb::WaitingSession {
        session: Some(session(s)),
        owner: owner.to_owned(),
    }
}

/// A session's status or agent changed.
pub fn session_changed(s: &Session) -> pb::SessionChanged {
    pb::SessionChanged {
        session_id: s.id.to_string(),
        status: s.status.as_str().to_owned(),
        agent: s.agent.clone(),
        assignee: s.assignee.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
        session_status: session_status(s.status).into(),
    }
}

pub fn session_status(status: SessionStatus) -> pb::SessionStatus {
    match status {
        SessionStatus::Active => pb::SessionStatus::Active,
        SessionStatus::PendingHuman => pb::SessionStatus::PendingHuman,
        SessionStatus::Resolved => pb::SessionStatus::Resolved,
        SessionStatus::Expired => pb::SessionStatus::Expired,
        SessionStatus::Ended => pb::SessionStatus::Ended,
    }
}

pub fn message_role(role: MessageRole) -> pb::MessageRole {
    match role {
        MessageRole::User => pb::MessageRole::User,
        MessageRole::Assistant => pb::MessageRole::Assistant,
        MessageRole::Human => pb::MessageRole::Human,
        MessageRole::System => pb::MessageRole::System,
    }
}

pub fn message(m: &Message) -> pb::Message {
    pb::Message {
        id: m.id.to_string(),
        session_id: m.session_id.to_string(),
        seq: m.seq,
        role: m.role.as_str().to_owned(),
        agent: m.agent.clone().unwrap_or_default(),
        content: m.content.clone(),
        created_at_ms: m.created_at,
        client_msg_id: m.client_msg_id.as_ref().map(ToString::to_string),
        run_id: m.run_id.as_ref().map(ToString::to_string),
        first_delta_ms: m.first_delta_ms,
        duration_ms: m.duration_ms,
        tool_calls_json: m.tool_calls.clone().unwrap_or_default(),
        message_role: message_role(m.role).into(),
        metadata_json: m.metadata.clone().unwrap_or_default(),
    }
}

/// A worker's agent as clients see it: the display name defaults to the
/// name, and an agent is listed unless its worker says otherwise.
pub fn agent(a: agent::AgentInfo) -> pb::AgentInfo {
    pb::AgentInfo {
        display_name: if a.display_name.is_empty() {
            a.name.clone()
        } else {
            a.display_name
        },
        listed: a.listed.unwrap_or(true),
        name: a.name,
        description: a.description,
        kind: a.kind,
    }
}

pub fn run_status(status: RunStatus) -> pb::RunStatus {
    match status {
        RunStatus::Queued => pb::RunStatus::Queued,
        RunStatus::Running => pb::RunStatus::Running,
        RunStatus::Retrying => pb::RunStatus::Retrying,
        RunStatus::Completed => pb::RunStatus::Completed,
        RunStatus::Failed => pb::RunStatus::Failed,
        RunStatus::Cancelled => pb::RunStatus::Cancelled,
    }
}

pub fn run_update(run: &Run, status: RunStatus, error: &str) -> pb::RunUpdate {
    pb::RunUpdate {
        session_id: run.session_id.to_string(),
        run_id: run.id.to_string(),
        status: run_status(status).into(),
        agent: run.agent.clone(),
        attempt: run.attempt,
        error: error.to_owned(),
        user_seq: run.user_seq,
    }
}
