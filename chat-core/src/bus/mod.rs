//! Session events fan-out. The in-process bus serves a single chat-core;
//! a shared bus (Redis) carries the same events across replicas.

mod memory;
mod redis;

pub use memory::InProcessBus;
pub use redis::{RedisBus, RedisBusError};

use async_trait::async_trait;
use chat_proto::chat::v1::SessionEvent;
use futures::stream::BoxStream;

/// An item of a subscription: an event, or notice that events were dropped
/// because the subscriber fell behind.
#[derive(Clone, Debug)]
pub enum BusItem {
    Event(std::sync::Arc<SessionEvent>),
    Lagged(u64),
}

/// Publishes a session's events to every subscriber of that session.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn publish(&self, session_id: &str, event: SessionEvent);
    /// Starts delivering the session's events published from now on.
    async fn subscribe(&self, session_id: &str) -> BoxStream<'static, BusItem>;
}
