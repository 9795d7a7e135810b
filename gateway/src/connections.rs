//! Caps on the long-lived connections one user and one client address hold
//! on this gateway at once: WebSockets, SSE reply streams and gRPC-Web
//! streams (`Subscribe`, `SendMessage`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open long-lived connections per user and per client address.
#[derive(Debug, Default)]
pub struct Connections {
    counts: Mutex<HashMap<String, usize>>,
    /// Told when the last open connection closes.
    all_closed: tokio::sync::Notify,
    /// Per user; 0 for no cap.
    max_per_user: usize,
    /// Per client address (an IPv6 client by its /64); 0 for no cap.
    max_per_ip: usize,
}

/// Which cap a connection would have gone over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverCap {
    User(usize),
    Address(usize),
}

impl OverCap {
    /// The 429 answer, retried after a second.
    pub fn into_error(self) -> crate::error::ApiError {
        let mut error = crate::error::ApiError::new(chat_common::ErrorCode::RateLimited, self.message());
        error.retry_after_ms = Some(1000);
        error
    }

    /// The message clients are told.
    pub fn message(self) -> String {
        match self {
            Self::User(max) => format!("too many open connections: at most {max} per user"),
            Self::Address(max) => format!("too many open connections: at most {max} per client address"),
        }
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    connections: Arc<Connections>,
    keys: [String; 2],
}

impl Connections {
    pub fn new(max_per_user: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::default(),
            all_closed: tokio::sync::Notify::new(),
            max_per_user,
            max_per_ip,
        })
    }

    /// Counts a connection of `user_id` from `address` unless either is at its cap.
    pub fn open(self: &Arc<Self>, user_id: &str, address: &str) -> Result<ConnectionGuard, OverCap> {
        let keys = [format!("user:{user_id}"), format!("ip:{address}")];
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = |key: &str| counts.get(key).copied().unwrap_or(0);
        if self.max_per_user > 0 && count(&keys[0]) >= self.max_per_user {
            return Err(OverCap::User(self.max_per_user));
        }
        if self.max_per_ip > 0 && count(&keys[1]) >= self.max_per_ip {
            return Err(OverCap::Address(self.max_per_ip));
        }
        for key in &keys {
            *counts.entry(key.clone()).or_default() += 1;
        }
        metrics::gauge!("chat_gateway_streams").increment(1.0);
        Ok(ConnectionGuard {
            connections: self.clone(),
            keys,
        })
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.connections.counts.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
        let none_left = counts.is_empty();
        drop(counts);
        metrics::gauge!("chat_gateway_streams").decrement(1.0);
        if none_left {
            self.connections.all_closed.notify_waiters();
        }
    }
}

impl Connections {
    /// Completes once no long-lived connection is open: a draining gateway
    /// waits for its WebSockets and streams to end (each is told to).
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.counts.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_open_connections_per_user_and_address() {
        let connections = Connections::new(2, 3);
        let a = connections.open("u1", "10.0.0.1").expect("first");
        let _b = connections.open("u1", "10.0.0.1").expect("second");
        assert_eq!(connections.open("u1", "10.0.0.2").unwrap_err(), OverCap::User(2));
        let _c = connections.open("u2", "10.0.0.1").expect("another user");
        assert_eq!(
            connections.open("u3", "10.0.0.1").unwrap_err(),
            OverCap::Address(3)
        );
        drop(a);
        assert!(
            connections.open("u1", "10.0.0.3").is_ok(),
            "a closed one frees its place"
        );
    }
}
