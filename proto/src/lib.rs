//! Generated types and stubs for the `chat.v1` and `agent.v1` packages.
//!
//! The `.proto` files under `proto/` are the contract: `chat.v1` is what
//! clients and internal services call on chat-core, `agent.v1` is what
//! chat-core calls on agent-workers.

pub mod codec;

pub mod chat {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("chat.v1");
    }
}

/// The handoff target that means a person: an agent that hands a run to
/// `human` escalates the session to the operators.
pub const HUMAN_AGENT: &str = "human";

/// `AgentInfo.kind` of a routing agent, which hands each message to the
/// agent that should answer it.
pub const ROUTER_KIND: &str = "router";

impl chat::v1::RunStatus {
    /// Whether a run in this status has ended: no event of it follows.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("agent.v1");
    }
}

/// Encoded `FileDescriptorSet` of every package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Largest gRPC message either side accepts (4 MiB, tonic's default decode limit).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
