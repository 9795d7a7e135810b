//! Each service, run as its own process, exposes its metrics on its admin
//! listener, and one chat turn plus one WebSocket moves them.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Api, Kind, Metrics, SECRET, Service, Ws, args};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(10);

/// The change of `name{labels}` between two scrapes.
fn delta(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exposes_metrics_that_a_chat_turn_moves() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display());

    let mut worker = Service::start(
        Kind::AgentWorker,
        "agent-worker",
        &args(&["--shutdown-timeout-secs", "10", "--jwt-secret", SECRET]),
        dir.path(),
    )
    .await
    .unwrap();
    let mut core = Service::start(
        Kind::ChatCore,
        "chat-core",
        &args(&[
            "--database-url",
            &database_url,
            "--migrate",
            "--jwt-secret",
            SECRET,
            "--agent-worker-url",
            &worker.url(),
            "--health-interval-ms",
            "100",
            "--shutdown-timeout-secs",
            "10",
        ]),
        dir.path(),
    )
    .await
    .unwrap();
    let mut gateway = Service::start(
        Kind::Gateway,
        "gateway",
        &args(&[
            "--chat-core-url",
            &core.url(),
            "--jwt-secret",
            SECRET,
            "--shutdown-timeout-secs",
            "10",
        ]),
        dir.path(),
    )
    .await
    .unwrap();

    let gateway_before = gateway.metrics().await.unwrap();
    let core_before = core.metrics().await.unwrap();
    let worker_before = worker.metrics().await.unwrap();

    // One chat turn over REST.
    let api = Api::new(gateway.addr);
    let token = api.new_user().await.unwrap();
    let session_id = api.session(&token, "echo").await.unwrap();
    let turn = api
        .post_message(&token, &session_id, "hello metrics")
        .await
        .unwrap();
    assert_eq!(turn["reply"]["content"], "hello metrics", "{turn}");
    assert_eq!(turn["message"]["role"], "user", "{turn}");

    // One WebSocket: ping, pong, close.
    let mut ws = Ws::connect(gateway.addr, &token).await.unwrap();
    ws.send(&json!({"type": "ping"})).await.unwrap();
    let pong = ws.expect("pong", Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong, json!({"type": "pong"}));
    ws.close().await.unwrap();

    // Gateway.
    let messages_route = [
        ("method", "POST"),
        ("route", "/api/v1/sessions/{id}/messages"),
        ("status", "200"),
    ];
    let ping_in = [("direction", "in"), ("type", "ping")];
    let gateway_after = gateway
        .metrics_when(SETTLE, |m| {
            m.sum("chat_ws_connections", &[]) == 0.0
                && delta(&gateway_before, m, "chat_ws_frames_total", &ping_in) >= 1.0
                && delta(
                    &gateway_before,
                    m,
                    "chat_http_request_duration_seconds_count",
                    &messages_route,
                ) >= 1.0
        })
        .await
        .unwrap();
    let text = &gateway_after.text;
    assert_eq!(
        delta(
            &gateway_before,
            &gateway_after,
            "chat_http_request_duration_seconds_count",
            &messages_route
        ),
        1.0,
        "gateway /metrics:\n{text}"
    );
    assert!(
        delta(&gateway_before, &gateway_after, "chat_ws_frames_total", &ping_in) >= 1.0,
        "gateway /metrics:\n{text}"
    );
    assert!(
        gateway_after.has("chat_ws_connections", &[]),
        "gateway /metrics:\n{text}"
    );
    assert_eq!(
        gateway_after.sum("chat_ws_connections", &[]),
        0.0,
        "gateway /metrics:\n{text}"
    );
    let bounds = gateway_after.bucket_bounds("chat_http_request_duration_seconds", &messages_route);
    for le in ["0.001", "60"] {
        assert!(bounds.iter().any(|b| b == le), "le={le} missing from {bounds:?}");
    }

    // chat-core.
    let send_ok = [
        ("service", "chat.v1.ChatService"),
        ("method", "SendMessage"),
        ("code", "OK"),
    ];
    let echo_completed = [("agent", "echo"), ("status", "completed")];
    let echo = [("agent", "echo")];
    let core_after = core
        .metrics_when(SETTLE, |m| {
            delta(
                &core_before,
                m,
                "chat_grpc_request_duration_seconds_count",
                &send_ok,
            ) >= 1.0
                && delta(&core_before, m, "chat_runs_total", &echo_completed) >= 1.0
                && delta(
                    &core_before,
                    m,
                    "chat_messages_stored_total",
                    &[("role", "assistant")],
                ) >= 1.0
        })
        .await
        .unwrap();
    let text = &core_after.text;
    assert_eq!(
        delta(
            &core_before,
            &core_after,
            "chat_grpc_request_duration_seconds_count",
            &send_ok
        ),
        1.0,
        "chat-core /metrics:\n{text}"
    );
    for role in ["user", "assistant"] {
        assert_eq!(
            delta(
                &core_before,
                &core_after,
                "chat_messages_stored_total",
                &[("role", role)]
            ),
            1.0,
            "role {role}; chat-core /metrics:\n{text}"
        );
    }
    assert_eq!(
        delta(&core_before, &core_after, "chat_runs_total", &echo_completed),
        1.0,
        "chat-core /metrics:\n{text}"
    );
    assert_eq!(
        delta(
            &core_before,
            &core_after,
            "chat_run_first_delta_seconds_count",
            &echo
        ),
        1.0,
        "chat-core /metrics:\n{text}"
    );
    assert!(
        core_after.has("chat_db_pool_connections", &[]),
        "chat-core /metrics:\n{text}"
    );
    assert!(
        core_after.sum("chat_db_pool_connections", &[]) >= 1.0,
        "chat-core /metrics:\n{text}"
    );
    let bounds = core_after.bucket_bounds("chat_grpc_request_duration_seconds", &send_ok);
    for le in ["0.001", "60"] {
        assert!(bounds.iter().any(|b| b == le), "le={le} missing from {bounds:?}");
    }

    // agent-worker.
    let run_calls = [("service", "agent.v1.AgentWorker"), ("method", "Run")];
    let worker_after = worker
        .metrics_when(SETTLE, |m| {
            delta(
                &worker_before,
                m,
                "chat_grpc_request_duration_seconds_count",
                &run_calls,
            ) >= 1.0
                && delta(&worker_before, m, "chat_runs_total", &echo_completed) >= 1.0
        })
        .await
        .unwrap();
    let text = &worker_after.text;
    assert_eq!(
        delta(
            &worker_before,
            &worker_after,
            "chat_grpc_request_duration_seconds_count",
            &run_calls
        ),
        1.0,
        "agent-worker /metrics:\n{text}"
    );
    assert_eq!(
        delta(&worker_before, &worker_after, "chat_runs_total", &echo_completed),
        1.0,
        "agent-worker /metrics:\n{text}"
    );
    let bounds = worker_after.bucket_bounds("chat_grpc_request_duration_seconds", &run_calls);
    for le in ["0.001", "60"] {
        assert!(bounds.iter().any(|b| b == le), "le={le} missing from {bounds:?}");
    }

    // Process and runtime metrics everywhere.
    for (service, metrics) in [
        ("gateway", &gateway_after),
        ("chat-core", &core_after),
        ("agent-worker", &worker_after),
    ] {
        assert!(
            metrics.sum("process_resident_memory_bytes", &[]) > 0.0,
            "{service} /metrics:\n{}",
            metrics.text
        );
        assert!(
            metrics.has("process_cpu_seconds_total", &[]),
            "{service} /metrics:\n{}",
            metrics.text
        );
        // Every service runs a few tasks of its own (its listeners at least).
        assert!(
            metrics.sum("chat_runtime_alive_tasks", &[]) > 0.0,
            "{service} /metrics:\n{}",
            metrics.text
        );
    }

    // Each stops cleanly on SIGTERM, well within its drain deadline.
    for service in [&mut gateway, &mut core, &mut worker] {
        let (status, elapsed) = service.stop(Duration::from_secs(13)).await.unwrap();
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            service.name,
            service.logs_tail()
        );
        assert!(
            elapsed < Duration::from_secs(11),
            "{} took {elapsed:?}",
            service.name
        );
    }
}
