//! Tokens: `chat_common::token` verification of any string with a fixed key
//! (and the gateway's `verify_access` on top), `bearer` header parsing, and
//! sign → verify round trips of arbitrary claims.
//!
//! Input: the first byte picks the mode; the rest is a token (mode 0) or the
//! claims and a one-byte tamper (mode 1).

#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use chat_common::token::{self, Audience, ISSUER, Role, TokenKeys};
use gateway::auth::Tokens;
use libfuzzer_sys::fuzz_target;

/// The key every input is verified with (seed tokens in the corpus use it too).
const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            verify_any(text);
        }
    } else if let Ok(claims) = Claims::arbitrary_take_rest(Unstructured::new(rest)) {
        round_trip(claims);
    }
});

/// Whatever the text, verification answers without panicking, and only an
/// HS256 token of ours with our issuer ever passes.
fn verify_any(text: &str) {
    let keys = TokenKeys::new(SECRET);
    if let Ok(claims) = keys.verify(text, Audience::ChatCore) {
        assert_eq!(claims.iss, ISSUER);
        let header = jsonwebtoken::decode_header(text).expect("a verified token has a header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    }
    let tokens = Tokens::new(SECRET, Duration::from_secs(60), Duration::from_secs(600));
    match tokens.verify_access(text) {
        Ok(user) => assert!(!user.user_id.is_empty()),
        Err(error) => assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED),
    }
    if let Some(bearer) = token::bearer(text) {
        assert!(!bearer.is_empty() && bearer == bearer.trim() && text.contains(bearer));
    }
}

#[derive(Arbitrary, Debug)]
struct Claims {
    service: bool,
    /// Lifetime in seconds; 0 is still valid within the leeway.
    ttl_secs: u32,
    /// Which byte of the signed token to change, and its new value.
    tamper_at: u16,
    tamper_to: u8,
    sub: String,
}

/// A signed token verifies with the claims it was signed with; changing any
/// one byte of it makes it fail.
fn round_trip(input: Claims) {
    let keys = TokenKeys::new(SECRET);
    let role = if input.service { Role::Service } else { Role::User };
    let ttl = Duration::from_secs(input.ttl_secs.into());
    let signed = keys.sign(&input.sub, role, ttl).expect("signing never fails");
    if signed.len() > 8 * 1024 {
        // Longer tokens are refused unread (subjects are ids, never this long).
        assert!(keys.verify(&signed, Audience::ChatCore).is_err());
        return;
    }
    let claims = keys.verify(&signed, Audience::ChatCore).expect("a fresh token verifies");
    assert_eq!(
        (claims.sub.as_str(), claims.role, claims.iss.as_str()),
        (input.sub.as_str(), role, ISSUER)
    );
    assert_eq!(claims.exp - claims.iat, u64::from(input.ttl_secs));
    assert!(TokenKeys::new(b"another-secret").verify(&signed, Audience::ChatCore).is_err());

    let mut tampered = signed.clone().into_bytes();
    let at = usize::from(input.tamper_at) % tampered.len();
    if tampered[at] == input.tamper_to {
        return;
    }
    tampered[at] = input.tamper_to;
    if let Ok(tampered) = String::from_utf8(tampered) {
        assert!(
            keys.verify(&tampered, Audience::ChatCore).is_err(),
            "a token with byte {at} changed still verifies: {tampered}"
        );
    }
}
