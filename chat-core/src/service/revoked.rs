//! Revoked sign-ins (a logout, or a refresh family revoked because a spent
//! token came back): their access tokens are refused for new calls, on every
//! replica, until they would have expired anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::now_ms;

/// How long a revoked sign-in is remembered when its access tokens'
/// lifetime is not given: a day, longer than any access token lives.
pub const DEFAULT_ACCESS_TTL_SECS: u64 = 24 * 3600;
/// Longest remembered lifetime accepted, in seconds.
const MAX_ACCESS_TTL_SECS: u64 = 7 * 24 * 3600;
/// Revoked sign-ins kept at most; past it the soonest to expire is forgotten
/// (a million logouts within one access token lifetime).
const MAX_REVOKED: usize = 1 << 20;

/// A revocation as every replica hears it: whose streams end, and which
/// sign-in's access tokens are refused until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub user_id: String,
    /// The sign-in (refresh token family) and the epoch ms until which its
    /// access tokens may still be presented.
    pub sign_in: Option<(String, i64)>,
    /// When it was made (µs since the epoch): the user's streams opened up to
    /// then end, those opened since (a client reconnecting after its logout
    /// answered, before the bus delivered it here) stay.
    pub at_us: i64,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl Revocation {
    /// The revocation of `family_id`, whose access tokens live `access_ttl_secs` (0: a day).
    pub fn of_sign_in(user_id: &str, family_id: &str, access_ttl_secs: u64) -> Self {
        let ttl = match access_ttl_secs {
            0 => DEFAULT_ACCESS_TTL_SECS,
            ttl => ttl.min(MAX_ACCESS_TTL_SECS),
        };
        // The leeway of token expiry checks, so a token just past `exp` is covered too.
        let until = now_ms() + (ttl as i64 + 5) * 1000;
        Self {
            user_id: user_id.to_owned(),
            sign_in: Some((family_id.to_owned(), until)),
            at_us: now_us(),
        }
    }

    /// The text carried on the bus: `user_id`, then the sign-in, its
    /// deadline and the revocation's time when there is one, separated by
    /// spaces.
    pub fn encode(&self) -> String {
        match &self.sign_in {
            Some((sign_in, until)) => format!("{} {sign_in} {until} {}", self.user_id, self.at_us),
            None => self.user_id.clone(),
        }
    }

    /// Reads [`Revocation::encode`]'s text. A bare user id ends the user's
    /// streams only; without a time (a bare user id, or a replica of the
    /// release before) the revocation is taken as made now.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let user_id = parts.next().filter(|u| !u.is_empty())?.to_owned();
        let sign_in = match (parts.next(), parts.next()) {
            (Some(sign_in), Some(until)) if !sign_in.is_empty() => {
                Some((sign_in.to_owned(), until.parse().ok()?))
            }
            (None, None) => None,
            _ => return None,
        };
        let at_us = match parts.next() {
            Some(at) if sign_in.is_some() => at.parse().ok()?,
            Some(_) => return None,
            None => now_us(),
        };
        parts.next().is_none().then_some(Self {
            user_id,
            sign_in,
            at_us,
        })
    }
}

/// The sign-ins revoked within the last access token lifetime.
#[derive(Clone, Default)]
pub struct RevokedSignIns {
    until: Arc<Mutex<HashMap<String, i64>>>,
}

impl RevokedSignIns {
    /// Refuses `sign_in`'s access tokens until `until` (epoch ms).
    pub fn insert(&self, sign_in: &str, until: i64) {
        let mut revoked = self.until.lock().unwrap_or_else(|p| p.into_inner());
        // Expired entries go each time the map doubles (amortised O(1)).
        if (revoked.len() >= 1024 && revoked.len().is_power_of_two()) || revoked.len() >= MAX_REVOKED {
            let now = now_ms();
            revoked.retain(|_, until| *until > now);
        }
        if revoked.len() >= MAX_REVOKED
            && let Some(soonest) = revoked
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone())
        {
            revoked.remove(&soonest);
        }
        let entry = revoked.entry(sign_in.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Whether `sign_in` was revoked and its tokens may still be presented.
    pub fn contains(&self, sign_in: &str) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sign_in)
            .is_some_and(|until| *until > now_ms())
    }

    /// Revoked sign-ins remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.until.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_round_trip_through_their_bus_text() {
        let signed_out = Revocation::of_sign_in("u1", "f1", 60);
        assert_eq!(Revocation::decode(&signed_out.encode()), Some(signed_out));
        let before = now_us();
        let user_only = Revocation::decode("u1").expect("a bare user id");
        assert_eq!((user_only.user_id.as_str(), user_only.sign_in), ("u1", None));
        assert!(user_only.at_us >= before, "taken as made now");
        let untimed = Revocation::decode("u1 f1 7").expect("without a time");
        assert_eq!(untimed.sign_in, Some(("f1".to_owned(), 7)));
        for bad in ["", "u1 f1", "u1 f1 soon", "u1 f1 1 later", "u1 f1 1 2 3", " f1 1"] {
            assert_eq!(Revocation::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_revoked_sign_in_is_refused_until_its_tokens_expire() {
        let revoked = RevokedSignIns::default();
        revoked.insert("live", now_ms() + 60_000);
        revoked.insert("past", now_ms() - 1);
        assert!(revoked.contains("live"));
        assert!(!revoked.contains("past"), "its tokens have expired anyway");
        assert!(!revoked.contains("other"));
        assert_eq!(revoked.len(), 2);
    }
}
