//! A bad configuration stops a service at once with one line naming the
//! setting and a non-zero exit, and never prints a secret.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn chat(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat"));
    command
        .args(args)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "off");
    for var in [
        "JWT_SECRET",
        "JWT_SECRET_FILE",
        "DATABASE_URL",
        "DATABASE_URL_FILE",
        "REDIS_URL",
        "REDIS_URL_FILE",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

/// A secret of the shortest accepted length (32 bytes).
const SECRET: &str = "config-errors-secret-of-32-bytes";

fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success(), "exited successfully");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line, got: {stderr}");
    stderr
}

#[test]
fn a_missing_secret_is_named() {
    let gateway = one_line_error(&chat(&["gateway", "--admin-listen", "127.0.0.1:0"], &[]));
    assert!(gateway.contains("JWT_SECRET"), "{gateway}");
    let core = one_line_error(&chat(&["chat-core", "--admin-listen", "127.0.0.1:0"], &[]));
    assert!(core.contains("JWT_SECRET"), "{core}");
}

#[test]
fn a_secret_shorter_than_32_bytes_is_named_on_every_service() {
    let short = "thirty-one-bytes-of-jwt-secret!";
    assert_eq!(short.len(), 31);
    for service in ["gateway", "chat-core"] {
        let error = one_line_error(&chat(
            &[service, "--admin-listen", "127.0.0.1:0"],
            &[("JWT_SECRET", short)],
        ));
        assert!(
            error.contains("JWT_SECRET must be at least 32 bytes"),
            "{service}: {error}"
        );
        assert!(!error.contains(short), "{error}");
    }
    // The all-in-one passes a given secret on to its services unchanged.
    let dir = tempfile::tempdir().unwrap();
    let error = one_line_error(&chat(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("JWT_SECRET", short)],
    ));
    assert!(error.contains("JWT_SECRET must be at least 32 bytes"), "{error}");
}

#[test]
fn a_secret_given_twice_or_in_a_missing_file_is_named_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let twice = one_line_error(&chat(
        &["gateway", "--admin-listen", "127.0.0.1:0"],
        &[
            ("JWT_SECRET", "hunter2-value"),
            ("JWT_SECRET_FILE", missing.to_str().unwrap()),
        ],
    ));
    assert!(twice.contains("JWT_SECRET_FILE"), "{twice}");
    assert!(!twice.contains("hunter2-value"), "{twice}");

    let unreadable = one_line_error(&chat(
        &[
            "chat-core",
            "--admin-listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
        ],
        &[("DATABASE_URL_FILE", missing.to_str().unwrap())],
    ));
    assert!(
        unreadable.starts_with("chat-core: error: DATABASE_URL_FILE"),
        "{unreadable}"
    );
}

#[test]
fn an_unreachable_database_fails_without_printing_its_password() {
    let output = chat(
        &[
            "chat-core",
            "--admin-listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--database-acquire-timeout-secs",
            "1",
        ],
        &[("DATABASE_URL", "postgres://chat:s3cret-pw@127.0.0.1:9/chat")],
    );
    let error = one_line_error(&output);
    assert!(error.contains("database"), "{error}");
    assert!(!error.contains("s3cret-pw"), "{error}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("s3cret-pw"));
}

#[test]
fn secrets_are_read_from_files() {
    // The secret file satisfies the check: the gateway gets past
    // configuration and fails later on the port it cannot bind instead.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let error = one_line_error(&chat(
        &["gateway", "--admin-listen", "127.0.0.1:0", "--listen", &port],
        &[("JWT_SECRET_FILE", secret.to_str().unwrap())],
    ));
    assert!(error.contains("bind"), "{error}");
    assert!(!error.contains("JWT_SECRET"), "{error}");
}
