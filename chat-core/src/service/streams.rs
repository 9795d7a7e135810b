//! The streams users hold on this replica (`Connect`, `Subscribe`,
//! `SendMessage`), so that a revoked sign-in ends them at once, and so a
//! user's concurrent streams can be counted; and the revoked sign-ins whose
//! access tokens are refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::revoked::{Revocation, RevokedSignIns};
use crate::bus::EventBus;

/// Each user's open streams on this replica, and the revoked sign-ins.
#[derive(Clone, Default)]
pub struct UserStreams {
    users: Arc<Mutex<HashMap<String, Held>>>,
    revoked: RevokedSignIns,
}

/// A user's streams: cancelled when their sign-in is revoked.
struct Held {
    revoked: CancellationToken,
    count: usize,
}

/// One open stream of a user; counted until dropped.
pub struct StreamGuard {
    streams: UserStreams,
    user_id: String,
    revoked: CancellationToken,
}

impl UserStreams {
    /// Counts a stream of `user_id` unless they already hold `max` (0: no
    /// cap); the guard's [`StreamGuard::revoked`] completes on revocation.
    pub fn open(&self, user_id: &str, max: usize) -> Option<StreamGuard> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let held = users.entry(user_id.to_owned()).or_insert_with(|| Held {
            revoked: CancellationToken::new(),
            count: 0,
        });
        if max > 0 && held.count >= max {
            return None;
        }
        held.count += 1;
        Some(StreamGuard {
            streams: self.clone(),
            user_id: user_id.to_owned(),
            revoked: held.revoked.clone(),
        })
    }

    /// Ends every stream `user_id` holds here.
    pub fn revoke(&self, user_id: &str) {
        let held = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_id);
        if let Some(held) = held {
            tracing::info!(
                user_id,
                streams = held.count,
                "sign-in revoked; ending the user's streams"
            );
            held.revoked.cancel();
        }
    }

    /// Applies a revocation here: the sign-in's access tokens are refused
    /// from now on, and the user's streams end (on every device: those
    /// signed in elsewhere reconnect).
    pub fn apply(&self, revocation: &Revocation) {
        if let Some((sign_in, until)) = &revocation.sign_in {
            self.revoked.insert(sign_in, *until);
        }
        self.revoke(&revocation.user_id);
    }

    /// Whether `sign_in` was signed out (its access tokens are refused).
    pub fn is_signed_out(&self, sign_in: &str) -> bool {
        self.revoked.contains(sign_in)
    }

    /// Applies every revocation the bus carries, from any replica, until the
    /// bus closes.
    pub fn follow(&self, bus: &dyn EventBus) -> tokio::task::JoinHandle<()> {
        let mut revocations = bus.revocations();
        let streams = self.clone();
        tokio::spawn(async move {
            while let Some(text) = revocations.next().await {
                match Revocation::decode(&text) {
                    Some(revocation) => streams.apply(&revocation),
                    None => tracing::warn!("malformed revocation on the bus"),
                }
            }
        })
    }

    /// Streams `user_id` holds here.
    pub fn count(&self, user_id: &str) -> usize {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            .map_or(0, |held| held.count)
    }
}

impl StreamGuard {
    /// Completes when the user's sign-in is revoked.
    pub fn revoked(&self) -> WaitForCancellationFutureOwned {
        self.revoked.clone().cancelled_owned()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut users = self.streams.users.lock().unwrap_or_else(|p| p.into_inner());
        // A revoked user's entry is gone (or replaced by a fresh one).
        if let Some(held) = users.get_mut(&self.user_id)
            && held.revoked == self.revoked
        {
            held.count -= 1;
            if held.count == 0 {
                users.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revocation_ends_the_users_streams_and_caps_count_open_ones() {
        let streams = UserStreams::default();
        let first = streams.open("u1", 2).expect("first");
        let _second = streams.open("u1", 2).expect("second");
        assert!(streams.open("u1", 2).is_none(), "over the cap");
        let other = streams.open("u2", 2).expect("another user");
        streams.revoke("u1");
        first.revoked().await;
        assert!(!other.revoked.is_cancelled());
        assert_eq!(streams.count("u1"), 0);
        let again = streams.open("u1", 2).expect("a new stream after the revocation");
        drop(first);
        assert_eq!(
            streams.count("u1"),
            1,
            "old guards do not count against new streams"
        );
        drop(again);
        assert_eq!(streams.count("u1"), 0);
    }
}
