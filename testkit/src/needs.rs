//! What a test needs beyond the Rust toolchain, and what happens without it.
//!
//! Suites must pass on a bare machine (`cargo test --workspace`), so a test
//! whose dependency is missing is skipped with a note. CI sets
//! `REQUIRE_ALL_TESTS=1` in the pass that provides everything: there, a
//! missing dependency fails the test instead, so no suite can pass skipped.

/// Environment variable that turns skips into failures.
pub const REQUIRE_ALL: &str = "REQUIRE_ALL_TESTS";

fn required() -> bool {
    std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips the test (returns `None`) or, under [`REQUIRE_ALL`], fails it.
///
/// # Panics
/// Under [`REQUIRE_ALL`], always.
pub fn skip<T>(reason: &str) -> Option<T> {
    assert!(
        !required(),
        "{REQUIRE_ALL} is set but this test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
    None
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The Postgres admin URL of `TEST_DATABASE_URL`, or a skip.
pub fn postgres() -> Option<String> {
    env("TEST_DATABASE_URL").or_else(|| skip("needs Postgres: set TEST_DATABASE_URL"))
}

/// The Redis URL of `TEST_REDIS_URL`, or a skip.
pub fn redis() -> Option<String> {
    env("TEST_REDIS_URL").or_else(|| skip("needs Redis: set TEST_REDIS_URL"))
}

/// The Redis every chat-core of a test stack uses when `TEST_REDIS_URL` is
/// set (the in-process bus otherwise); never skips.
pub fn shared_redis() -> Option<String> {
    env("TEST_REDIS_URL")
}

/// Whether `program` runs on this machine (`program args` exits 0), or a skip.
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
        skip(&format!("needs `{program} {}`: {install_hint}", args.join(" ")))
    }
}
