//! The streams users hold on this replica (`Connect`, `Subscribe`,
//! `SendMessage`), so that a revoked sign-in ends them at once, and so a
//! user's concurrent streams can be counted; and the revoked sign-ins whose
//! access tokens are refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use tokio::sync::watch;

use super::revoked::{Revocation, RevokedSignIns, now_us};
use crate::bus::EventBus;

/// Each user's open streams on this replica, and the revoked sign-ins.
#[derive(Clone, Default)]
pub struct UserStreams {
    users: Arc<Mutex<HashMap<String, Held>>>,
    revoked: RevokedSignIns,
}

/// A user's streams: those opened up to a revocation's time end with it.
struct Held {
    /// The latest revocation's time (µs since the epoch).
    revoked_at: watch::Sender<i64>,
    /// Streams opened since, by opening time (µs since the epoch): the
    /// streams that count.
    opened: BTreeMap<i64, usize>,
}

impl Held {
    fn count(&self) -> usize {
        self.opened.values().sum()
    }
}

/// One open stream of a user; counted until dropped.
pub struct StreamGuard {
    streams: UserStreams,
    user_id: String,
    opened_at: i64,
    revoked_at: watch::Receiver<i64>,
}

impl UserStreams {
    /// Counts a stream of `user_id` unless they already hold `max` (0: no
    /// cap); the guard's [`StreamGuard::revoked`] completes on revocation.
    pub fn open(&self, user_id: &str, max: usize) -> Option<StreamGuard> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let held = users.entry(user_id.to_owned()).or_insert_with(|| Held {
            revoked_at: watch::Sender::new(i64::MIN),
            opened: BTreeMap::new(),
        });
        if max > 0 && held.count() >= max {
            return None;
        }
        let opened_at = now_us();
        *held.opened.entry(opened_at).or_default() += 1;
        Some(StreamGuard {
            streams: self.clone(),
            user_id: user_id.to_owned(),
            opened_at,
            revoked_at: held.revoked_at.subscribe(),
        })
    }

    /// Ends every stream `user_id` opened here up to `at_us` (µs since the
    /// epoch); they stop counting at once. Streams opened since stay.
    pub fn revoke(&self, user_id: &str, at_us: i64) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = users.get_mut(user_id) else {
            return;
        };
        if !held.revoked_at.send_if_modified(|latest| {
            let later = at_us > *latest;
            *latest = (*latest).max(at_us);
            later
        }) {
            return;
        }
        let since = held.opened.split_off(&(at_us + 1));
        let ended: usize = std::mem::replace(&mut held.opened, since).into_values().sum();
        tracing::info!(
            user_id,
            streams = ended,
            "sign-in revoked; ending the user's streams"
        );
    }

    /// Applies a revocation here: the sign-in's access tokens are refused
    /// from now on, and the user's streams opened before it end (on every
    /// device: those signed in elsewhere reconnect).
    pub fn apply(&self, revocation: &Revocation) {
        if let Some((sign_in, until)) = &revocation.sign_in {
            self.revoked.insert(sign_in, *until);
        }
        self.revoke(&revocation.user_id, revocation.at_us);
    }

    /// Whether `sign_in` was signed out (its access tokens are refused).
    pub fn is_signed_out(&self, sign_in: &str) -> bool {
        self.revoked.contains(sign_in)
    }

    /// Applies a revocation as the bus carries it.
    fn apply_text(&self, text: &str) {
        match Revocation::decode(text) {
            Some(revocation) => self.apply(&revocation),
            None => tracing::warn!("malformed revocation on the bus"),
        }
    }

    /// Applies the revocations the bus keeps now, then, in a task, every one
    /// it carries from any replica until it closes. Those kept are applied
    /// before this returns: a replica that serves afterwards refuses a
    /// sign-in revoked before it started.
    pub async fn follow(&self, bus: &dyn EventBus) -> tokio::task::JoinHandle<()> {
        let mut revocations = bus.revocations();
        for text in bus.kept_revocations().await {
            self.apply_text(&text);
        }
        let streams = self.clone();
        tokio::spawn(async move {
            while let Some(text) = revocations.next().await {
                streams.apply_text(&text);
            }
        })
    }

    /// Streams `user_id` holds here.
    pub fn count(&self, user_id: &str) -> usize {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            .map_or(0, Held::count)
    }
}

impl StreamGuard {
    /// Completes when one of the user's sign-ins is revoked after this
    /// stream opened.
    pub fn revoked(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut revoked_at = self.revoked_at.clone();
        let opened_at = self.opened_at;
        async move {
            // A sender dropped took the user's entry with it, which goes
            // once no stream counts: this one was revoked.
            let _ = revoked_at.wait_for(|at| *at >= opened_at).await;
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut users = self.streams.users.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = users.get_mut(&self.user_id) else {
            return;
        };
        // A stream ended by a revocation stopped counting then.
        if let Some(same_time) = held.opened.get_mut(&self.opened_at) {
            *same_time -= 1;
            if *same_time == 0 {
                held.opened.remove(&self.opened_at);
            }
        }
        if held.opened.is_empty() {
            users.remove(&self.user_id);
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
        streams.revoke("u1", now_us());
        first.revoked().await;
        assert!(!other.revoked_at.has_changed().expect("held"));
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
        drop(_second);
        assert!(
            !streams.users.lock().expect("not poisoned").contains_key("u1"),
            "nothing left behind"
        );
    }

    #[tokio::test]
    async fn a_revocation_heard_late_spares_streams_opened_after_it() {
        // Arrange: a revocation made, then a stream opened before the bus
        // delivered it here.
        let streams = UserStreams::default();
        let before = streams.open("u1", 0).expect("before");
        let revocation = Revocation::of_sign_in("u1", "f1", 60);
        let after = loop {
            let guard = streams.open("u1", 0).expect("after");
            if guard.opened_at > revocation.at_us {
                break guard;
            }
        };

        // Act
        streams.apply(&revocation);

        // Assert
        before.revoked().await;
        assert!(
            futures::FutureExt::now_or_never(after.revoked()).is_none(),
            "the stream opened after the revocation stays"
        );
        assert_eq!(streams.count("u1"), 1);
        assert!(streams.is_signed_out("f1"));
    }
}
