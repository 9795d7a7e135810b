//! The all-in-one `chat` process under attack-shaped load and on disk: a
//! login flood for unknown users stays within a stated memory bound with the
//! excess refused (503 and `Retry-After`), and the files it creates (the
//! SQLite database, the generated token secret, their folder) are
//! owner-only from the start.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::AllInOne;

/// Hashes allowed at once in the flood test; the memory bound follows from it.
const HASH_CONCURRENCY: u64 = 2;
/// argon2id's default memory cost (`ARGON2_MEMORY_KIB`), in MiB.
const HASH_MIB: u64 = 19;
/// Concurrent logins in the flood: unbounded, they took ~20 MiB each.
const FLOOD: usize = 100;

/// A `VmRSS`/`VmHWM`-style line of `/proc/<pid>/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_login_flood_for_unknown_users_stays_within_its_memory_bound() {
    // Arrange: two hashing slots, a short queue, rate limits out of the way.
    let dir = tempfile::tempdir().unwrap();
    let concurrency = HASH_CONCURRENCY.to_string();
    let mut chat = AllInOne::spawn(
        &dir.path().join("data"),
        &[
            ("PASSWORD_HASH_CONCURRENCY", concurrency.as_str()),
            ("PASSWORD_HASH_QUEUE_MS", "100"),
            ("RATE_LIMIT_MAX_REQUESTS", "100000"),
            ("AUTH_RATE_LIMIT_MAX", "100000"),
        ],
    );
    chat.wait_ready().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let login = format!("http://{}/api/v1/auth/login", chat.gateway);
    let attempt = |i: usize| {
        let (http, login) = (http.clone(), login.clone());
        async move {
            let body = serde_json::json!({"username": format!("ghost_{i}"), "password": "not a password"});
            http.post(&login).json(&body).send().await.unwrap()
        }
    };
    // Warm up: a few sequential hashes, so the baseline includes the working set of one.
    for i in 0..3 {
        assert_eq!(attempt(i).await.status(), 401);
    }
    let pid = chat.pid();
    let baseline_kib = proc_status_kib(pid, "VmRSS:");
    // Reset the peak (VmHWM) to the current RSS.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();

    // Act: the flood, all at once.
    let started = Instant::now();
    let flood: Vec<_> = (0..FLOOD).map(|i| tokio::spawn(attempt(1000 + i))).collect();
    let mut refused = 0;
    let mut checked = 0;
    for response in flood {
        let response = response.await.unwrap();
        match response.status().as_u16() {
            401 => checked += 1,
            503 => {
                refused += 1;
                let retry_after = response.headers()["retry-after"].to_str().unwrap().to_owned();
                assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let peak_kib = proc_status_kib(pid, "VmHWM:");

    // Assert: growth within the hashes allowed at once (plus slack for the
    // requests themselves), where unbounded hashing grew by ~2 GiB; the
    // excess refused, not queued without end.
    let bound_mib = (HASH_CONCURRENCY + 2) * HASH_MIB + 48;
    let grew_mib = peak_kib.saturating_sub(baseline_kib) / 1024;
    assert!(
        grew_mib <= bound_mib,
        "RSS grew by {grew_mib} MiB under {FLOOD} logins (bound {bound_mib} MiB; baseline {} MiB)",
        baseline_kib / 1024
    );
    eprintln!(
        "flood: {:?}, {checked} checked, {refused} refused, RSS +{grew_mib} MiB (bound {bound_mib} MiB)",
        started.elapsed()
    );
    assert!(checked >= 1, "some logins were checked");
    assert!(
        refused >= 1,
        "the excess was refused with 503 ({checked} checked)"
    );
    assert_eq!(checked + refused, FLOOD);
}

#[cfg(unix)]
#[tokio::test]
async fn data_files_and_the_generated_secret_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut chat = AllInOne::spawn(&data, &[]);
    chat.wait_ready().await;

    assert_eq!(mode(&data), 0o700, "the data folder");
    assert_eq!(mode(&data.join("jwt_secret")), 0o600, "the generated secret");
    assert_eq!(mode(&data.join("chat.db")), 0o600, "the SQLite database");
    for sidecar in ["chat.db-wal", "chat.db-shm"] {
        let path = data.join(sidecar);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{sidecar}");
        }
    }
    let secret = std::fs::read_to_string(data.join("jwt_secret")).unwrap();
    assert!(secret.len() >= 32, "the generated secret passes the length check");
}

#[cfg(unix)]
#[tokio::test]
async fn a_planted_symlink_at_the_secret_path_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let target = dir.path().join("attacker-readable");
    std::os::unix::fs::symlink(&target, data.join("jwt_secret")).unwrap();

    let mut chat = AllInOne::spawn(&data, &[]);
    let status = tokio::time::timeout(Duration::from_secs(30), chat.child.wait())
        .await
        .unwrap()
        .unwrap();

    assert!(!status.success(), "chat must refuse to start");
    assert!(!target.exists(), "the secret was written through the symlink");
}
