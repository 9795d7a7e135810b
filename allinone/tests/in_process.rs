//! The all-in-one's services call each other directly: a chat turn over
//! the WebSocket completes, and meanwhile the process holds no TCP
//! connection to itself (gateway → chat-core and chat-core → agent-worker
//! would each be one over loopback).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{AllInOne, Api, Ws};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// The inodes of the sockets `pid` holds open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The established TCP connections of `pid`, as (local, remote) addresses
/// in `/proc/net/tcp` notation.
fn established(pid: u32) -> Vec<(String, String)> {
    let mine = socket_inodes(pid);
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (local, remote, state, inode) = (fields[1], fields[2], fields[3], fields[9]);
                    let inode: u64 = inode.parse().ok()?;
                    (state == "01" && mine.contains(&inode)).then(|| (local.to_owned(), remote.to_owned()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn a_turn_in_the_all_in_one_crosses_no_socket_between_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = AllInOne::spawn(&dir.path().join("data"), &[]);
    chat.wait_ready().await;
    let api = Api::new(chat.gateway);
    let token = api.new_user().await.unwrap();
    let session = api.session(&token, "echo").await.unwrap();
    let mut ws = Ws::connect(chat.gateway, &token).await.unwrap();
    ws.send(&json!({"type": "subscribe", "session_id": session}))
        .await
        .unwrap();
    ws.expect("subscribed", WAIT).await.unwrap();
    ws.send(
        &json!({"type": "send", "session_id": session, "client_msg_id": "m1", "content": "hello in memory"}),
    )
    .await
    .unwrap();
    ws.expect("ack", WAIT).await.unwrap();
    let reply = loop {
        let message = ws.expect("message", WAIT).await.unwrap();
        if message["message"]["role"] == "assistant" {
            break message;
        }
    };
    assert_eq!(reply["message"]["content"], "hello in memory");

    // Both ends of a connection between two of its services would be the
    // process's own sockets; the only connections are the test's own.
    let connections = established(chat.pid());
    assert!(!connections.is_empty(), "the test's own connections are listed");
    let locals: HashSet<&str> = connections.iter().map(|(local, _)| local.as_str()).collect();
    let to_itself: Vec<_> = connections
        .iter()
        .filter(|(_, remote)| locals.contains(remote.as_str()))
        .collect();
    assert!(
        to_itself.is_empty(),
        "the process is connected to itself over TCP: {to_itself:?}"
    );
    ws.close().await.unwrap();
}
