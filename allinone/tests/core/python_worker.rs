//! The language-neutral contract: the Python worker under
//! `examples/python-worker` serves a run end to end through chat-core.
//! Skipped when python3 with grpcio and grpcio-tools is not installed
//! (`.ci/run` installs them).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use chat_proto::chat::v1::{self as pb, session_event::Event};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts the Python worker; returns the process and its gRPC address.
async fn spawn_python_worker() -> Option<(tokio::process::Child, String)> {
    chat_testkit::needs::program(
        "python3",
        &["-c", "import grpc, grpc_tools"],
        "pip install -r examples/python-worker/requirements.txt",
    )?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python-worker/worker.py");
    let mut worker = tokio::process::Command::new("python3")
        .args([script, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .expect("the worker prints its address")
        .to_owned();
    Some((worker, addr))
}

fn reply_deltas(events: &[pb::SendMessageEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::send_message_event::Event::SessionEvent(pb::SessionEvent {
                event: Some(Event::Delta(d)),
            })) => Some(d.text.clone()),
            _ => None,
        })
        .collect()
}

/// A Rust worker serving `echo` and the Python worker serving `shout` in
/// one pool: chat-core lists the union and sends every run to the worker
/// that serves its agent, so none fails with an unknown agent.
#[tokio::test]
async fn rust_and_python_workers_serving_different_agents_share_one_pool() {
    let Some((_python, python_addr)) = spawn_python_worker().await else {
        return;
    };
    let rust = spawn_worker_with(Some(
        r#"
[[agents]]
name = "echo"
description = "echo"
kind = "echo"
"#,
    ))
    .await;
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let pool = format!("{},http://{python_addr}", rust.url);
    let core = spawn_core(&db.url, &pool).await;
    let (_, token) = register(core.addr).await;

    let agents = client(core.addr)
        .await
        .list_agents(with_token(pb::ListAgentsRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .agents;
    let mut names: Vec<_> = agents.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["echo", "shout"]);

    // Balanced blindly, about half of these would reach the wrong worker.
    for round in 0..6 {
        for (agent, expected) in [("shout", ["HELLO ", "ROUND"]), ("echo", ["hello ", "round"])] {
            let session = create_session_with(core.addr, &token, agent, "").await;
            let events = send(
                core.addr,
                &token,
                &session.id,
                &format!("m{round}"),
                "hello round",
            )
            .await;
            assert_eq!(reply_deltas(&events), expected, "{agent} in round {round}");
        }
    }
}

#[tokio::test]
async fn the_python_worker_serves_a_run_end_to_end() {
    let Some((_worker, addr)) = spawn_python_worker().await else {
        return;
    };

    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let core = spawn_core(&db.url, &format!("http://{addr}")).await;
    let (_, token) = register(core.addr).await;
    let agents = client(core.addr)
        .await
        .list_agents(with_token(pb::ListAgentsRequest {}, &token))
        .await
        .unwrap();
    assert_eq!(
        agents
            .into_inner()
            .agents
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["shout"]
    );

    let session = create_session_with(core.addr, &token, "shout", "").await;
    let events = send(core.addr, &token, &session.id, "m1", "hello from rust").await;
    assert_eq!(reply_deltas(&events), ["HELLO ", "FROM ", "RUST"]);
    let stored = history(core.addr, &token, &session.id).await;
    assert_eq!(
        (stored[1].content.as_str(), stored[1].agent.as_str()),
        ("HELLO FROM RUST", "shout")
    );
}
