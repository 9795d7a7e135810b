//! Records to protobuf messages.

use chat_proto::chat::v1 as pb;

use crate::domain::RunStatus;
use crate::store::{MessageRecord, RunRecord, SessionRecord};

pub fn session(s: &SessionRecord) -> pb::Session {
    pb::Session {
        id: s.id.clone(),
        owner_id: s.owner_id.clone(),
        title: s.title.clone(),
        status: s.status.clone(),
        agent: s.agent.clone(),
        created_at_ms: s.created_at,
        updated_at_ms: s.updated_at,
        last_seq: s.last_seq,
        metadata_json: s.metadata.clone(),
        resolution_notes: s.resolution_notes.clone().unwrap_or_default(),
        concurrency: s.concurrency.clone().unwrap_or_default(),
    }
}

pub fn message(m: &MessageRecord) -> pb::Message {
    pb::Message {
        id: m.id.clone(),
        session_id: m.session_id.clone(),
        seq: m.seq,
        role: m.role.clone(),
        agent: m.agent.clone().unwrap_or_default(),
        content: m.content.clone(),
        created_at_ms: m.created_at,
        client_msg_id: m.client_msg_id.clone(),
        run_id: m.run_id.clone(),
        first_delta_ms: m.first_delta_ms,
        duration_ms: m.duration_ms,
        tool_calls_json: m.tool_calls.clone().unwrap_or_default(),
    }
}

pub fn run_update(run: &RunRecord, status: RunStatus, error: &str) -> pb::RunUpdate {
    pb::RunUpdate {
        session_id: run.session_id.clone(),
        run_id: run.id.clone(),
        status: status.to_proto().into(),
        agent: run.agent.clone(),
        attempt: u32::try_from(run.attempt).unwrap_or_default(),
        error: error.to_owned(),
    }
}
