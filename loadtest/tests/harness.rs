//! The harness against a real stack (agent-worker, chat-core, gateway on 127.0.0.1): every
//! mode runs the `loadtest` binary at tiny sizes and reports what it measured as JSON.

use std::num::NonZeroU32;

use serde_json::Value;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("positive")
}

/// A stack that lets one address and a few users through, as bench/run starts it.
async fn bench_stack() -> anyhow::Result<chat_testkit::Stack> {
    chat_testkit::Stack::builder()
        .core(|settings| settings.replay_rate_limit = 0)
        .gateway(|settings| {
            settings.rate_limit_max_requests = nz(1_000_000);
            settings.auth_rate_limit_max = nz(1_000_000);
            settings.account_rate_limit_max = nz(1_000_000);
            settings.message_rate_limit = nz(1_000_000);
            settings.frame_rate_limit = nz(1_000_000);
            settings.max_connections_per_user = 0;
            settings.max_connections_per_ip = 0;
        })
        .start()
        .await
}

/// Runs `loadtest <args>` against `stack`, watching this test process as `stack`; its result.
async fn loadtest(stack: &chat_testkit::Stack, args: &[&str]) -> anyhow::Result<Value> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .args(["--gateway", &stack.gateway().url("")])
        .args(["--pid", &format!("stack={}", std::process::id())])
        .args(["--progress-secs", "0", "--timeout-secs", "15"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.success(), "loadtest {args:?} failed: {stderr}");
    let document: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(document["mode"], args[0], "{document}");
    Ok(document["result"].clone())
}

#[tokio::test]
async fn turns_are_timed_from_send_to_ack_first_delta_and_stored_reply() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    let result = loadtest(
        &stack,
        &["turns", "-c", "2", "--seconds", "1", "--warmup-secs", "0.2"],
    )
    .await?;

    let turns = result["turns"].as_u64().expect("turns");
    assert!(turns > 0, "{result}");
    assert_eq!(result["errors_total"], 0, "{result}");
    assert_eq!(result["incomplete_replies"], 0, "{result}");
    for measure in ["send_to_ack", "send_to_first_delta", "send_to_reply"] {
        assert_eq!(result["latency"][measure]["count"], turns, "{measure}: {result}");
    }
    let (ack, reply) = (
        result["latency"]["send_to_ack"]["p50_ms"].as_f64().expect("ack"),
        result["latency"]["send_to_reply"]["p50_ms"]
            .as_f64()
            .expect("reply"),
    );
    assert!(ack <= reply, "the ack comes before the reply: {result}");
    assert_eq!(result["rss"][0]["name"], "stack", "{result}");
    Ok(())
}

#[tokio::test]
async fn errors_are_counted_by_kind_and_not_hidden() -> anyhow::Result<()> {
    // A gateway with its production message limit: most sends are refused.
    let stack = chat_testkit::Stack::builder()
        .gateway(|settings| {
            settings.message_rate_limit = nz(3);
            settings.auth_rate_limit_max = nz(1_000);
        })
        .start()
        .await?;

    let result = loadtest(
        &stack,
        &["turns", "-c", "1", "--seconds", "0.5", "--warmup-secs", "0"],
    )
    .await?;

    assert!(
        result["errors"]["error_frame:rate_limited"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{result}"
    );
    assert_eq!(result["turns"], 3, "{result}");
    Ok(())
}

#[tokio::test]
async fn deltas_are_counted_and_checked_against_the_stored_reply() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    let result = loadtest(
        &stack,
        &["deltas", "--sessions", "2", "--words", "30", "--seconds", "0.5"],
    )
    .await?;

    let replies = result["replies"].as_u64().expect("replies");
    assert!(replies > 0, "{result}");
    assert_eq!(result["deltas"], replies * 30, "{result}");
    assert_eq!(result["every_delta_delivered"], true, "{result}");
    assert!(
        result["deltas_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{result}"
    );
    Ok(())
}

#[tokio::test]
async fn fanout_delivers_every_delta_to_every_subscriber() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    let result = loadtest(
        &stack,
        &["fanout", "--subscribers", "5", "--turns", "2", "--words", "10"],
    )
    .await?;

    assert_eq!(result["subscribers"], 5, "{result}");
    assert_eq!(result["deltas_delivered"], 5 * 2 * 10, "{result}");
    assert_eq!(result["delivery_latency"]["count"], 5 * 2 * 10, "{result}");
    assert_eq!(result["every_delta_delivered"], true, "{result}");
    Ok(())
}

#[tokio::test]
async fn reconnect_storms_count_authenticated_subscribed_connections() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    let result = loadtest(
        &stack,
        &["reconnect", "-c", "2", "--seconds", "0.5", "--sessions", "2"],
    )
    .await?;

    let connections = result["connections"].as_u64().expect("connections");
    assert!(connections > 0, "{result}");
    assert_eq!(
        result["latency"]["connect_to_subscribed"]["count"], connections,
        "{result}"
    );
    assert_eq!(result["errors_total"], 0, "{result}");
    Ok(())
}

#[tokio::test]
async fn soak_samples_rss_through_the_run() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    let result = loadtest(
        &stack,
        &[
            "soak",
            "-c",
            "2",
            "--rate",
            "20",
            "--seconds",
            "2",
            "--warmup-secs",
            "0.5",
            "--sample-secs",
            "0.4",
        ],
    )
    .await?;

    assert!(result["turns"].as_u64().is_some_and(|n| n > 10), "{result}");
    let series = result["rss_series"].as_array().expect("series");
    assert!(series.len() >= 4, "{result}");
    assert!(
        series
            .iter()
            .all(|s| s["rss_kib"]["stack"].as_u64().is_some_and(|kib| kib > 0)),
        "{result}"
    );
    assert_eq!(result["flatness"][0]["name"], "stack", "{result}");
    Ok(())
}

#[tokio::test]
async fn idle_sockets_are_held_by_child_processes_and_priced_per_socket() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    let result = loadtest(
        &stack,
        &[
            "idle",
            "--connections",
            "30",
            "--per-process",
            "10",
            "--sessions",
            "3",
            "--settle-secs",
            "0.2",
        ],
    )
    .await?;

    assert_eq!(result["opened"], 30, "{result}");
    assert_eq!(result["processes"], 3, "{result}");
    assert_eq!(result["errors_total"], 0, "{result}");
    assert_eq!(result["closed_while_idle"], 0, "{result}");
    assert_eq!(result["connect_latency"]["count"], 30, "{result}");
    assert!(result["rss"][0]["kib_per_socket"].is_number(), "{result}");
    Ok(())
}

#[tokio::test]
async fn a_refused_upgrade_is_an_error_not_a_crash() -> anyhow::Result<()> {
    // One socket per user allowed: all but one of the idle sockets are refused.
    let stack = chat_testkit::Stack::builder()
        .gateway(|settings| {
            settings.max_connections_per_user = 1;
            settings.auth_rate_limit_max = nz(1_000);
        })
        .start()
        .await?;

    let result = loadtest(
        &stack,
        &[
            "idle",
            "--connections",
            "4",
            "--per-process",
            "4",
            "--sessions",
            "1",
            "--settle-secs",
            "0.1",
        ],
    )
    .await?;

    assert_eq!(result["opened"], 1, "{result}");
    assert_eq!(result["errors_total"], 3, "{result}");
    Ok(())
}

#[tokio::test]
async fn rest_turns_are_timed_to_the_stored_reply() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    let result = loadtest(
        &stack,
        &[
            "turns",
            "--rest",
            "-c",
            "2",
            "--seconds",
            "1",
            "--warmup-secs",
            "0",
        ],
    )
    .await?;

    assert_eq!(result["transport"], "rest", "{result}");
    let turns = result["turns"].as_u64().expect("turns");
    assert!(turns > 0, "{result}");
    assert_eq!(result["latency"]["send_to_reply"]["count"], turns, "{result}");
    assert_eq!(result["errors_total"], 0, "{result}");
    Ok(())
}

#[tokio::test]
async fn a_child_that_cannot_hold_its_sockets_fails_the_idle_run_clearly() -> anyhow::Result<()> {
    let stack = bench_stack().await?;

    // Too few open files for the sockets each child is to hold.
    let run = tokio::process::Command::new("sh")
        .args(["-c", "ulimit -n 100 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "idle",
            "--connections",
            "200",
            "--per-process",
            "100",
            "--sessions",
            "1",
        ])
        .args(["--gateway", &stack.gateway().url(""), "--progress-secs", "0"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .map_err(|_| anyhow::anyhow!("the idle run hangs instead of failing"))??;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("raise `ulimit -n` or lower --per-process"),
        "{stderr}"
    );
    assert!(stderr.contains("ended before opening its sockets"), "{stderr}");
    Ok(())
}
