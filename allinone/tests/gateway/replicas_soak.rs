//! Two gateways and two chat-cores on one database and a private Redis,
//! all real: a user's two connections on different gateways see the same
//! events; a client that drops mid-run and resumes on the other gateway gets
//! the full reply exactly once; and a soak of 20 sessions × 50 messages with
//! random disconnects, resumes across replicas and a Redis restart loses and
//! duplicates nothing, checked message by message against the database.
//! Needs `redis-server` on PATH (skipped otherwise; failed under `REQUIRE_ALL_TESTS`).

#![allow(clippy::unwrap_used)]

use crate::common;
use chat_testkit::PrivateRedis;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic_health::pb::health_check_response::ServingStatus;

const PASSWORD: &str = "correct horse battery";

/// A redis-server of the test's own, so it can be restarted.
struct Stack {
    gateways: [SocketAddr; 2],
    cores: [SocketAddr; 2],
    http: reqwest::Client,
    db: chat_testkit::TestDatabase,
}

async fn spawn_stack(redis_url: &str) -> Stack {
    // Two chat-cores on one database and Redis, a gateway in front of each.
    let worker = chat_testkit::worker(Some(chat_testkit::SLOW_AGENTS), |_| {})
        .await
        .unwrap();
    let db = chat_testkit::TestDatabase::new().await.unwrap();
    let mut gateways = Vec::new();
    let mut cores = Vec::new();
    for _ in 0..2 {
        let redis_url = redis_url.to_owned();
        // The soak reconnects and resubscribes far more often than any
        // client would: the per-user limits on frames and replay stay out of it.
        let core = chat_testkit::core(&db.url, &[&worker.url], move |s| {
            s.redis_url = Some(redis_url.into());
            s.replay_rate_limit = 0;
        })
        .await
        .unwrap();
        let gateway = chat_testkit::gateway(&core.url, |s| {
            s.message_rate_limit = common::nz(100_000);
            s.frame_rate_limit = common::nz(100_000);
        })
        .await
        .unwrap();
        gateways.push(gateway.addr);
        cores.push(core.addr);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Stack {
        gateways: [gateways[0], gateways[1]],
        cores: [cores[0], cores[1]],
        http,
        db,
    }
}

impl Stack {
    async fn user_and_session(&self, username: &str) -> (String, String) {
        self.user_and_session_with(username, "echo").await
    }

    async fn user_and_session_with(&self, username: &str, agent: &str) -> (String, String) {
        let base = format!("http://{}", self.gateways[0]);
        let credentials = json!({"username": username, "password": PASSWORD});
        let status = self
            .http
            .post(format!("{base}/api/v1/auth/register"))
            .json(&credentials)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
        let login: Value = self
            .http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&credentials)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();
        let session: Value = self
            .http
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(&token)
            .json(&json!({"agent": agent}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (token, session["id"].as_str().unwrap().to_owned())
    }

    async fn history(&self, token: &str, session_id: &str) -> Vec<Value> {
        let url = format!(
            "http://{}/api/v1/sessions/{session_id}/messages?after_seq=0&limit=1000",
            self.gateways[1]
        );
        let body: Value = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["messages"].as_array().unwrap().clone()
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(gateway: SocketAddr, token: &str) -> Socket {
    let url = format!("ws://{gateway}/api/v1/ws?access_token={token}");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send_frame(socket: &mut Socket, frame: Value) -> bool {
    socket.send(Message::text(frame.to_string())).await.is_ok()
}

/// The next JSON frame, or `None` when the socket ends or `wait` passes.
async fn recv(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A delta's `(run, attempt)`.
type Attempt = (String, u64);

/// One connection's deltas of one run attempt. A subscription streams an
/// attempt from delta 0 and each delta once (a resumed one replays the run
/// in flight from delta 0, or streams none of it when earlier deltas are out
/// of reach), so per connection the indexes are exactly 0, 1, 2, …
struct Stream {
    text: String,
    next: u64,
    zero_at: Instant,
}

/// What one client has seen of its session, across its connections.
#[derive(Default)]
struct Seen {
    /// Messages, deduplicated by seq.
    messages: BTreeMap<i64, Value>,
    /// When each message was first seen, and on which connection.
    message_seen: HashMap<i64, (u64, Instant)>,
    /// Per run attempt, the text of every delta index seen, deduplicated by
    /// `(run, attempt, index)` across connections.
    deltas: BTreeMap<Attempt, BTreeMap<u64, String>>,
    /// What each connection streamed of each run attempt.
    streams: HashMap<(u64, Attempt), Stream>,
    /// Per run, the connection that got its message's first ack (a resend's
    /// `duplicate` ack is not counted).
    acked: HashMap<String, u64>,
    /// The current connection, counted from 1.
    connection: u64,
}

impl Seen {
    fn last_seq(&self) -> i64 {
        self.messages.keys().next_back().copied().unwrap_or(0)
    }

    /// A new connection starts.
    fn reconnected(&mut self) {
        self.connection += 1;
    }

    /// Records a frame; panics on a message delivered twice (a resume asks
    /// for what follows the last seq seen, so nothing comes again), on a
    /// connection's deltas of an attempt other than 0, 1, 2, … in order, and
    /// on two texts for one `(run, attempt, index)`.
    fn take(&mut self, frame: &Value) {
        let now = Instant::now();
        match frame["type"].as_str() {
            Some("ack") if frame["duplicate"] != true => {
                let run = frame["run_id"].as_str().unwrap().to_owned();
                self.acked.insert(run, self.connection);
            }
            Some("message") => {
                let message = frame["message"].clone();
                let seq = message["seq"].as_i64().unwrap();
                if let Some(earlier) = self.messages.insert(seq, message) {
                    panic!("message {seq} delivered twice: {earlier} and {frame}");
                }
                self.message_seen.insert(seq, (self.connection, now));
            }
            Some("delta") => {
                let run = frame["run_id"].as_str().unwrap().to_owned();
                let (attempt, index) = (
                    frame["attempt"].as_u64().unwrap(),
                    frame["index"].as_u64().unwrap(),
                );
                let text = frame["text"].as_str().unwrap();
                let key = (run.clone(), attempt);
                let stream = self
                    .streams
                    .entry((self.connection, key.clone()))
                    .or_insert_with(|| Stream {
                        text: String::new(),
                        next: 0,
                        zero_at: now,
                    });
                assert_eq!(
                    index, stream.next,
                    "run {run} attempt {attempt}: delta {index} where this connection expected {} \
                     (a hole, a repeat, or a stream not starting at delta 0)",
                    stream.next
                );
                stream.text.push_str(text);
                stream.next += 1;
                let earlier = self.deltas.entry(key).or_default().insert(index, text.to_owned());
                if let Some(earlier) = earlier {
                    assert_eq!(
                        earlier, text,
                        "delta {index} of run {run} attempt {attempt} seen with two texts"
                    );
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn two_connections_on_two_gateways_see_identical_sequences() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let stack = spawn_stack(&redis.url()).await;
    let (token, session) = stack.user_and_session("twin_user").await;
    let mut a = connect(stack.gateways[0], &token).await;
    let mut b = connect(stack.gateways[1], &token).await;
    for socket in [&mut a, &mut b] {
        send_frame(
            socket,
            json!({"type": "subscribe", "session_id": session, "after_seq": 0}),
        )
        .await;
        assert_eq!(
            recv(socket, Duration::from_secs(10)).await.unwrap()["type"],
            "subscribed"
        );
    }
    for i in 0..3 {
        let frame = json!({"type": "send", "session_id": session, "client_msg_id": format!("m{i}"), "content": format!("turn {i} here")});
        send_frame(&mut a, frame).await;
    }
    let mut streams = Vec::new();
    for socket in [&mut a, &mut b] {
        let mut events = Vec::new();
        let mut replies = 0;
        while replies < 3 {
            let frame = recv(socket, Duration::from_secs(15))
                .await
                .expect("events keep coming");
            if frame["type"] == "message" && frame["message"]["role"] == "assistant" {
                replies += 1;
            }
            if frame["type"] != "ack" {
                events.push(frame);
            }
        }
        streams.push(events);
    }
    assert_eq!(
        streams[0], streams[1],
        "the same events in the same order on both gateways"
    );
}

#[tokio::test]
async fn dropping_mid_run_and_resuming_on_the_other_gateway_gives_the_reply_once() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let stack = spawn_stack(&redis.url()).await;
    // One word every 150 ms: the run is still streaming when the client resumes.
    let (token, session) = stack.user_and_session_with("resume_user", "slow").await;
    let content = "a reply long enough to be cut somewhere in the middle of its many words";
    let mut a = connect(stack.gateways[0], &token).await;
    send_frame(
        &mut a,
        json!({"type": "subscribe", "session_id": session, "after_seq": 0}),
    )
    .await;
    send_frame(
        &mut a,
        json!({"type": "send", "session_id": session, "client_msg_id": "only", "content": content}),
    )
    .await;
    // Read until two deltas arrived, then cut the connection mid-run.
    let mut last_seq = 0;
    let mut deltas_before = 0;
    while deltas_before < 2 {
        let frame = recv(&mut a, Duration::from_secs(10)).await.unwrap();
        match frame["type"].as_str() {
            Some("message") => last_seq = frame["message"]["seq"].as_i64().unwrap(),
            Some("delta") => deltas_before += 1,
            _ => {}
        }
    }
    drop(a);

    // Every frame the resumed connection gets, counted as is (no
    // de-duplication on this side).
    let mut b = connect(stack.gateways[1], &token).await;
    send_frame(
        &mut b,
        json!({"type": "subscribe", "session_id": session, "after_seq": last_seq}),
    )
    .await;
    let mut frames = Vec::new();
    loop {
        let frame = recv(&mut b, Duration::from_secs(10))
            .await
            .expect("the run's end arrives after resuming");
        let ended = frame["type"] == "run"
            && ["completed", "failed", "cancelled"].contains(&frame["status"].as_str().unwrap());
        frames.push(frame);
        if ended {
            break;
        }
    }
    let of = |kind: &str| frames.iter().filter(|f| f["type"] == kind).collect::<Vec<_>>();
    let replies: Vec<_> = of("message")
        .into_iter()
        .filter(|f| f["message"]["role"] == "assistant")
        .collect();
    assert_eq!(replies.len(), 1, "the reply exactly once: {frames:?}");
    assert_eq!(replies[0]["message"]["content"], content);
    assert_eq!(of("run").last().unwrap()["status"], "completed");
    let deltas = of("delta");
    let indexes: Vec<u64> = deltas.iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(
        indexes,
        (0..indexes.len() as u64).collect::<Vec<_>>(),
        "the run in flight from delta 0, each delta once"
    );
    assert!(
        indexes.len() > deltas_before,
        "the resumed connection saw the run still streaming"
    );
    let streamed: String = deltas.iter().map(|d| d["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, content, "the deltas spell the stored reply");
    let stored = stack.history(&token, &session).await;
    assert_eq!(stored.len(), 2, "one message, one reply");
    assert_eq!(stored[1]["id"], replies[0]["message"]["id"]);
}

/// Drives one session: sends `turns` messages, drops and resumes randomly on
/// either gateway, resends unacked messages with the same client_msg_id,
/// and returns what it saw once every reply arrived.
async fn drive(gateways: [SocketAddr; 2], token: String, session: String, turns: usize, seed: u64) -> Seen {
    let mut rng = seed;
    let mut roll = move |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let mut seen = Seen::default();
    let mut next_turn = 0usize;
    let mut unacked: Option<(String, String)> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "session {session} stalled at seq {}",
            seen.last_seq()
        );
        let gateway = gateways[roll(2) as usize];
        let mut socket = connect(gateway, &token).await;
        seen.reconnected();
        let after = seen.last_seq();
        if !send_frame(
            &mut socket,
            json!({"type": "subscribe", "session_id": session, "after_seq": after}),
        )
        .await
        {
            continue;
        }
        let mut dropped = false;
        while !dropped {
            let replies = seen
                .messages
                .values()
                .filter(|m| m["role"] == "assistant")
                .count();
            if replies == turns {
                return seen;
            }
            if unacked.is_none() && next_turn < turns {
                let id = format!("{session}-{next_turn}");
                let content = format!("message {next_turn} of {session}");
                unacked = Some((id, content));
                next_turn += 1;
            }
            if let Some((id, content)) = &unacked {
                let frame =
                    json!({"type": "send", "session_id": session, "client_msg_id": id, "content": content});
                if !send_frame(&mut socket, frame).await {
                    break;
                }
            }
            // Read until this message is acked (or, with nothing to send, until
            // the next event), dropping the connection now and then.
            loop {
                // Something is always on its way (an ack, a run's events):
                // silence means live delivery broke, which a reconnect would
                // only hide.
                let frame = recv(&mut socket, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|| panic!("session {session}: no frame for 30 s, or the socket closed"));
                if frame["type"] == "error" {
                    panic!("unexpected error frame {frame}");
                }
                seen.take(&frame);
                if frame["type"] == "ack" {
                    unacked = None;
                    if roll(10) == 0 {
                        dropped = true;
                    }
                    break;
                }
                if unacked.is_none() {
                    break;
                }
            }
        }
    }
}

#[tokio::test]
async fn soak_across_replicas_with_disconnects_and_a_redis_restart_loses_nothing() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    const SESSIONS: usize = 20;
    const TURNS: usize = 50;
    let stack = spawn_stack(&redis.url()).await;
    let mut clients = Vec::new();
    for i in 0..SESSIONS {
        let (token, session) = stack.user_and_session(&format!("soak_user_{i}")).await;
        clients.push((token.clone(), session.clone()));
    }
    let drivers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, (token, session))| {
            tokio::spawn(drive(
                stack.gateways,
                token.clone(),
                session.clone(),
                TURNS,
                i as u64 + 1,
            ))
        })
        .collect();
    // Restart Redis while the soak runs: from its stop until both
    // chat-cores report it reachable again, fan-out across replicas is down
    // and a live stream may be cut short (see `check_streams`).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outage_began = Instant::now();
    redis.stop().await;
    for core in stack.cores {
        wait_for_readiness(core, ServingStatus::NotServing).await;
    }
    redis.resume().await.unwrap();
    for core in stack.cores {
        wait_for_readiness(core, ServingStatus::Serving).await;
    }
    let outage = (outage_began, Instant::now());

    let mut seens = Vec::new();
    for driver in drivers {
        seens.push(driver.await.unwrap());
    }
    let attempts = completed_attempts(&stack.db.url).await;
    let mut tally = Tally::default();
    for ((token, session), seen) in clients.iter().zip(seens) {
        let stored = stack.history(token, session).await;
        assert_eq!(
            stored.len(),
            2 * TURNS,
            "session {session}: every message and reply stored once"
        );
        let seqs: Vec<_> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=(2 * TURNS) as i64).collect::<Vec<_>>(),
            "no gaps, in order"
        );
        for message in &stored {
            let seq = message["seq"].as_i64().unwrap();
            assert_eq!(
                seen.messages.get(&seq),
                Some(message),
                "session {session}: client saw seq {seq} as stored"
            );
        }
        let users: Vec<_> = stored
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].clone())
            .collect();
        let replies: Vec<_> = stored
            .iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| m["content"].clone())
            .collect();
        let expected: Vec<Value> = (0..TURNS)
            .map(|t| json!(format!("message {t} of {session}")))
            .collect();
        assert_eq!(users, expected, "each message once, in send order");
        assert_eq!(replies, expected, "each reply once, in order");
        check_streams(&seen, &stored, &attempts, outage, &mut tally);
    }
    eprintln!("soak: streamed replies {tally:?}");
}

/// How each reply was streamed to its client.
#[derive(Debug, Default)]
struct Tally {
    /// Followed from delta 0 to the reply on one connection, whole.
    whole: usize,
    /// Followed from delta 0 to the reply on one connection across the
    /// Redis outage, and cut short by it.
    cut_by_the_redis_outage: usize,
    /// Delivered on a connection that did not stream the attempt: what was
    /// streamed on others, if anything, is a prefix.
    not_followed: usize,
    /// Of those, delivered on the connection that got the message's first
    /// ack, so subscribed throughout the run: a catch-up (after the Redis
    /// outage, or after messages published out of seq order) found the run
    /// answered and its live deltas were dropped for the stored reply.
    /// Counted, not refused: see docs/delivery.md §5.
    not_followed_though_subscribed_throughout: usize,
}

/// Checks every reply's deltas as the client saw them. For every run attempt,
/// the deltas seen on all connections together (deduplicated by `(run,
/// attempt, index)`; one index never with two texts, see [`Seen::take`]) are
/// 0..n without a hole. For the attempt that completed the run, they spell a
/// prefix of the stored reply. When the connection that delivered the reply
/// also streamed that attempt (from delta 0), its own deltas must spell the
/// whole reply, unless it streamed across the Redis outage (live deltas lost
/// while a replica's Redis connection was down, the shared delta log lost
/// with the restart). A connection that did not stream the attempt (it
/// resumed after the run ended, or a catch-up after lost events found the
/// run already answered) gets the stored reply, which is then the proof.
fn check_streams(
    seen: &Seen,
    stored: &[Value],
    attempts: &HashMap<String, u64>,
    (outage_began, outage_ended): (Instant, Instant),
    tally: &mut Tally,
) {
    for ((run, attempt), deltas) in &seen.deltas {
        let indexes: Vec<u64> = deltas.keys().copied().collect();
        assert_eq!(
            indexes,
            (0..indexes.len() as u64).collect::<Vec<_>>(),
            "run {run} attempt {attempt}: the deltas seen have a hole"
        );
    }
    for reply in stored.iter().filter(|m| m["role"] == "assistant") {
        let run = reply["run_id"].as_str().unwrap().to_owned();
        let text = reply["content"].as_str().unwrap();
        let attempt = attempts[&run];
        let key = (run.clone(), attempt);
        let streamed: String = seen
            .deltas
            .get(&key)
            .map(|deltas| deltas.values().map(String::as_str).collect())
            .unwrap_or_default();
        assert!(
            text.starts_with(&streamed),
            "run {run} attempt {attempt}: streamed {streamed:?} is not a prefix of the reply {text:?}"
        );
        let seq = reply["seq"].as_i64().unwrap();
        let (connection, reply_at) = seen.message_seen[&seq];
        // The connection that delivered the reply followed the attempt when
        // it streamed it (from delta 0, see `Stream`).
        match seen.streams.get(&(connection, key)) {
            None => {
                tally.not_followed += 1;
                // A connection that got the message's first ack subscribed
                // before the run existed (a connection's frames are handled
                // in order); this one also got the reply.
                if seen.acked.get(&run) == Some(&connection) {
                    tally.not_followed_though_subscribed_throughout += 1;
                }
            }
            Some(stream) if stream.text == text => tally.whole += 1,
            Some(stream) => {
                assert!(
                    stream.zero_at <= outage_ended && reply_at >= outage_began,
                    "run {run} attempt {attempt}: followed from delta 0 to the reply on one \
                     connection, away from the Redis outage, the client saw {:?} of {text:?}",
                    stream.text
                );
                tally.cut_by_the_redis_outage += 1;
            }
        }
    }
}

/// The attempt each completed run completed with, from the database.
async fn completed_attempts(url: &str) -> HashMap<String, u64> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, CAST(attempt AS BIGINT) AS attempt FROM runs WHERE status = 'completed'",
        ))
        .await
        .unwrap();
    let attempts = rows
        .iter()
        .map(|row| {
            let id: String = row.try_get("", "id").unwrap();
            let attempt: i64 = row.try_get("", "attempt").unwrap();
            (id, u64::try_from(attempt).unwrap())
        })
        .collect();
    db.close().await.unwrap();
    attempts
}

/// Waits until chat-core at `addr` reports `wanted` readiness (its database
/// and Redis both reachable, or not).
async fn wait_for_readiness(addr: SocketAddr, wanted: ServingStatus) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "chat.v1.ChatService".into(),
    };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .unwrap_or_else(|_| panic!("chat-core {addr} not {wanted:?} within 15 s"))
            .unwrap()
            .unwrap();
        if next.status() == wanted {
            return;
        }
    }
}

#[tokio::test]
async fn with_redis_down_the_running_replica_still_serves_and_fan_out_recovers_when_it_returns() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let stack = spawn_stack(&redis.url()).await;
    let (token, session) = stack.user_and_session("redis_outage_user").await;
    redis.stop().await;

    // The replica the client talks to runs the session and serves it alone.
    let mut local = connect(stack.gateways[0], &token).await;
    send_frame(
        &mut local,
        json!({"type": "subscribe", "session_id": session, "after_seq": 0}),
    )
    .await;
    let send =
        json!({"type": "send", "session_id": session, "client_msg_id": "down-1", "content": "redis is down"});
    send_frame(&mut local, send).await;
    let mut seen = Seen::default();
    while seen.messages.len() < 2 {
        let frame = recv(&mut local, Duration::from_secs(10))
            .await
            .expect("served without redis");
        seen.take(&frame);
    }
    assert_eq!(seen.messages[&2]["content"], "redis is down");

    // A client of the other replica resumes from the database.
    let mut remote = connect(stack.gateways[1], &token).await;
    send_frame(
        &mut remote,
        json!({"type": "subscribe", "session_id": session, "after_seq": 0}),
    )
    .await;
    let mut remote_seen = Seen::default();
    while remote_seen.messages.len() < 2 {
        let frame = recv(&mut remote, Duration::from_secs(10))
            .await
            .expect("resume works without redis");
        remote_seen.take(&frame);
    }

    // Redis returns: live fan-out to the other replica recovers by itself.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut turn = 0;
    loop {
        turn += 1;
        let content = format!("redis is back {turn}");
        let send = json!({"type": "send", "session_id": session, "client_msg_id": format!("up-{turn}"), "content": content});
        send_frame(&mut local, send).await;
        let mut got = false;
        while let Some(frame) = recv(&mut remote, Duration::from_secs(2)).await {
            remote_seen.take(&frame);
            if frame["type"] == "message" && frame["message"]["content"] == content.as_str() {
                got = true;
                break;
            }
        }
        if got {
            break;
        }
        assert!(Instant::now() < deadline, "cross-replica fan-out never recovered");
    }
    let stored = stack.history(&token, &session).await;
    let last = stored.last().unwrap()["seq"].as_i64().unwrap();
    assert!(
        remote_seen.messages.len() as i64 >= last - 1,
        "the remote client has every message up to the last turn"
    );
}
