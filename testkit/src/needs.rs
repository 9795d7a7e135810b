//! What a test needs beyond the Rust toolchain, and what happens without it.
//!
//! - Postgres and Redis: a test that needs one runs when `TEST_DATABASE_URL`
//!   / `TEST_REDIS_URL` is set and is skipped (with a note) only when it is
//!   unset. Set but unreachable fails the test at once: it never passes
//!   quietly against a service it could not reach.
//! - Tools (`redis-server`, Python with grpcio, Node.js with the Socket.IO
//!   client of `allinone/tests/gateway/socketio-client`): a missing tool
//!   skips the test on a developer's machine, and fails it when
//!   `REQUIRE_ALL_TESTS` is set, as CI sets it in every pass.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Environment variable that turns a missing tool into a failure.
pub const REQUIRE_ALL: &str = "REQUIRE_ALL_TESTS";

fn required() -> bool {
    std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty() && v != "0")
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The value of `name` when it is set, checked reachable once per test
/// process (every stack and test database asks); `None` when unset.
///
/// # Panics
/// When `name` is set but nothing answers at its host and port.
fn reachable(name: &str, what: &str, default_port: u16) -> Option<String> {
    static CHECKED: Mutex<BTreeMap<String, Option<String>>> = Mutex::new(BTreeMap::new());
    if let Some(url) = CHECKED.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
        return url.clone();
    }
    let url = answering(name, env(name), what, default_port);
    CHECKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), url.clone());
    url
}

/// `url` (the value of `name`, if set), checked reachable.
fn answering(name: &str, url: Option<String>, what: &str, default_port: u16) -> Option<String> {
    let url = url?;
    let address = crate::db::address_of(&url, default_port);
    let reachable = address
        .as_ref()
        .is_ok_and(|addr| std::net::TcpStream::connect_timeout(addr, Duration::from_secs(3)).is_ok());
    let at = address.map_or_else(|error| error.to_string(), |addr| addr.to_string());
    assert!(reachable, "{name} is set but {what} at {at} does not answer");
    Some(url)
}

/// [`reachable`], with a note that the test is skipped when `name` is unset.
fn service(name: &str, what: &str, default_port: u16) -> Option<String> {
    let url = reachable(name, what, default_port);
    if url.is_none() {
        eprintln!("skipped: needs {what}: set {name}");
    }
    url
}

/// The Postgres admin URL of `TEST_DATABASE_URL`; `None` (skip) only when unset.
pub fn postgres() -> Option<String> {
    service("TEST_DATABASE_URL", "Postgres", 5432)
}

/// The Redis URL of `TEST_REDIS_URL`; `None` (skip) only when unset.
pub fn redis() -> Option<String> {
    service("TEST_REDIS_URL", "Redis", 6379)
}

/// The Postgres every test database is created on when `TEST_DATABASE_URL`
/// is set (SQLite otherwise); never skips, and fails when set but unreachable.
pub fn shared_postgres() -> Option<String> {
    reachable("TEST_DATABASE_URL", "Postgres", 5432)
}

/// The Redis every chat-core of a test stack uses when `TEST_REDIS_URL` is
/// set (the in-process bus otherwise); never skips, and fails when set but
/// unreachable: a stack must not quietly fall back to the in-process bus.
pub fn shared_redis() -> Option<String> {
    reachable("TEST_REDIS_URL", "Redis", 6379)
}

/// A tool the test needs is missing: skips it, or under [`REQUIRE_ALL`]
/// fails it.
///
/// # Panics
/// Under [`REQUIRE_ALL`], always.
pub fn missing<T>(reason: &str) -> Option<T> {
    assert!(
        !required(),
        "{REQUIRE_ALL} is set but this test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
    None
}

/// `Some` when `program args` runs and exits 0, else [`missing`].
pub fn program(program: &str, args: &[&str], install_hint: &str) -> Option<()> {
    let ran = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ran {
        Some(())
    } else {
        missing(&format!("needs `{program} {}`: {install_hint}", args.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_runs_is_found() {
        assert_eq!(program("true", &[], "coreutils"), Some(()));
    }

    #[test]
    fn an_unset_service_is_none_and_a_set_unreachable_one_fails() {
        assert_eq!(answering("PROBE_URL", None, "a probe", 9), None);
        // Port 1 on loopback: nothing listens there.
        let failed = std::panic::catch_unwind(|| {
            answering("PROBE_URL", Some("redis://127.0.0.1:1".into()), "a probe", 9)
        });
        assert!(
            failed.is_err(),
            "set but unreachable must fail the test, not skip it"
        );
    }
}
