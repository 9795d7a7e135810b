//! REST request bodies: every JSON body type the gateway accepts, decoded as
//! its extractor does (`ApiJson` or `OptionalJson`), from any bytes.
//!
//! Invariants: decoding never panics (deep nesting included) and a refused
//! body is a 400 `invalid`, never a 500.

#![no_main]

use gateway::error::ApiError;
use gateway::extract::{decode_json, decode_optional_json};
use gateway::routes::{auth, handoff, messages, sessions};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the route, so each one sees every body.
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let refused = match route % 6 {
        // POST /auth/register, POST /auth/login
        0 => decode_json::<auth::Credentials>(body).err(),
        // POST /auth/refresh
        1 => decode_json::<auth::RefreshBody>(body).err(),
        // POST /auth/logout (the body may be left out)
        2 => decode_optional_json::<auth::RefreshBody>(body).err(),
        // POST /sessions
        3 => decode_json::<sessions::CreateSession>(body).err(),
        // POST /sessions/{id}/resolve (the body may be left out)
        4 => decode_optional_json::<handoff::ResolveBody>(body).err(),
        // POST /sessions/{id}/messages
        _ => decode_json::<messages::PostMessage>(body).err(),
    };
    if let Some(error) = refused {
        check_refusal(&error);
    }
});

fn check_refusal(error: &ApiError) {
    assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error.code.as_str(), "invalid", "{error}");
    assert!(!error.message.is_empty());
}
