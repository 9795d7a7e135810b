//! One chat over one WebSocket: send a message, time its ack, first delta and stored reply.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::SessionRef;
use crate::stats::{Counters, Errors, Latency};
use crate::ws::{self, Endpoint, Frame, Incoming, Socket};

/// The timings of one turn, from the moment its `send` frame went out.
#[derive(Clone, Copy, Debug)]
pub struct TurnTimes {
    pub ack: Duration,
    pub first_delta: Option<Duration>,
    pub reply: Duration,
    /// Deltas received for the run (every attempt).
    pub deltas: u32,
    /// The deltas of the final attempt came with indices 0, 1, ... and add up to the reply.
    pub complete: bool,
}

/// Histograms and counts of the turns one task (or a whole mode) measured.
#[derive(Clone, Debug, Default)]
pub struct TurnStats {
    pub ack: Latency,
    pub first_delta: Latency,
    pub reply: Latency,
    pub turns: u64,
    pub deltas: u64,
    pub incomplete: u64,
    pub errors: Errors,
}

impl TurnStats {
    pub fn record(&mut self, times: &TurnTimes) {
        self.ack.record(times.ack);
        if let Some(first) = times.first_delta {
            self.first_delta.record(first);
        }
        self.reply.record(times.reply);
        self.turns += 1;
        self.deltas += u64::from(times.deltas);
        if !times.complete {
            self.incomplete += 1;
        }
    }

    /// Records a turn's outcome (counted in `counters` too); `false` when
    /// the socket is gone and its session stops.
    pub fn take(&mut self, outcome: Result<TurnTimes, String>, counters: &Counters) -> bool {
        match outcome {
            Ok(times) => {
                self.record(&times);
                counters.done();
                true
            }
            Err(kind) => self.failed(kind, counters),
        }
    }

    /// Counts a failed turn; `false` when the socket is gone.
    pub fn failed(&mut self, kind: String, counters: &Counters) -> bool {
        let gone = ws::ends_socket(&kind);
        self.errors.add(kind);
        counters.error();
        !gone
    }

    /// Counts a warm-up turn's error as `warmup:<kind>`; `false` when the socket is gone.
    pub fn warmup_failed(&mut self, kind: &str) -> bool {
        self.errors.add(format!("warmup:{kind}"));
        !ws::ends_socket(kind)
    }

    pub fn merge(&mut self, other: &Self) {
        self.ack.merge(&other.ack);
        self.first_delta.merge(&other.first_delta);
        self.reply.merge(&other.reply);
        self.turns += other.turns;
        self.deltas += other.deltas;
        self.incomplete += other.incomplete;
        self.errors.merge(&other.errors);
    }

    /// The latencies as JSON: `send_to_ack`, `send_to_first_delta`, `send_to_reply`.
    pub fn latency_json(&self) -> serde_json::Value {
        json!({
            "send_to_ack": self.ack.summary(),
            "send_to_first_delta": self.first_delta.summary(),
            "send_to_reply": self.reply.summary(),
        })
    }
}

/// A subscribed WebSocket chatting in one session.
pub struct Chat {
    socket: Socket,
    session_id: String,
    tag: String,
    sent: u64,
    timeout: Duration,
}

impl Chat {
    /// Connects and subscribes; the error kind for the report otherwise.
    pub async fn open(
        endpoint: &Endpoint,
        source: Option<IpAddr>,
        session: &SessionRef,
        tag: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut socket = ws::connect(endpoint, source, &session.token, timeout)
            .await
            .map_err(|err| err.kind())?;
        ws::subscribe(&mut socket, &session.session_id, timeout).await?;
        Ok(Self {
            socket,
            session_id: session.session_id.clone(),
            tag,
            sent: 0,
            timeout,
        })
    }

    /// Sends `content` and reads until the run's stored reply; the error kind otherwise.
    pub async fn turn(&mut self, content: &str) -> Result<TurnTimes, String> {
        self.turn_with_run_id(content).await.map(|(_, times)| times)
    }

    /// [`Chat::turn`], also giving the id of the run that answered.
    pub async fn turn_with_run_id(&mut self, content: &str) -> Result<(String, TurnTimes), String> {
        self.sent += 1;
        let client_msg_id = format!("{}-{}", self.tag, self.sent);
        let started = Instant::now();
        ws::send_json(
            &mut self.socket,
            json!({"type": "send", "session_id": self.session_id, "client_msg_id": client_msg_id, "content": content}),
        )
        .await
        .map_err(|_| "send_failed".to_owned())?;
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        let mut run = RunProgress::default();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let text = match ws::next_text(&mut self.socket, left).await {
                None if run.id.is_none() => return Err("timeout:ack".into()),
                None => return Err("timeout:reply".into()),
                Some(Incoming::Closed(code)) => return Err(ws::closed_kind(code)),
                Some(Incoming::Text(text)) => text,
            };
            let frame: Frame = serde_json::from_str(&text).map_err(|_| "bad_frame".to_owned())?;
            if let Some(times) = run.on_frame(frame, &client_msg_id, started)? {
                return Ok((run.id.unwrap_or_default(), times));
            }
        }
    }

    /// Closes the socket, not waiting for the server's answer.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// What a turn has seen of its run so far.
#[derive(Default)]
struct RunProgress {
    id: Option<String>,
    ack: Option<Duration>,
    first_delta: Option<Duration>,
    attempt: u32,
    next_index: u32,
    in_order: bool,
    text: String,
    deltas: u32,
}

impl RunProgress {
    /// Takes in one frame: the turn's timings once its reply came, an error kind if it failed.
    fn on_frame(
        &mut self,
        frame: Frame,
        client_msg_id: &str,
        started: Instant,
    ) -> Result<Option<TurnTimes>, String> {
        let ours = |run_id: &str| self.id.as_deref() == Some(run_id);
        match frame {
            Frame::Ack {
                client_msg_id: id,
                run_id,
            } if id == client_msg_id => {
                self.id = Some(run_id.into_owned());
                self.ack = Some(started.elapsed());
                self.in_order = true;
            }
            Frame::Delta {
                run_id,
                index,
                text,
                attempt,
            } if ours(&run_id) => {
                if attempt != self.attempt {
                    // A retried run streams again from index 0.
                    self.attempt = attempt;
                    self.next_index = 0;
                    self.text.clear();
                    self.in_order = true;
                }
                self.in_order &= index == self.next_index;
                self.next_index = index + 1;
                self.text.push_str(&text);
                self.deltas += 1;
                self.first_delta.get_or_insert_with(|| started.elapsed());
            }
            Frame::Message { message }
                if message.role == "assistant" && message.run_id.as_deref().is_some_and(ours) =>
            {
                return Ok(Some(TurnTimes {
                    ack: self.ack.unwrap_or_default(),
                    first_delta: self.first_delta,
                    reply: started.elapsed(),
                    deltas: self.deltas,
                    complete: self.in_order && self.text == message.content,
                }));
            }
            Frame::Run { run_id, status, .. }
                if ours(&run_id) && matches!(status.as_ref(), "failed" | "cancelled") =>
            {
                return Err(format!("run_{status}"));
            }
            Frame::Error {
                code,
                client_msg_id: id,
                ..
            } if id.as_deref().is_none_or(|id| id == client_msg_id) => {
                return Err(format!("error_frame:{code}"));
            }
            _ => {}
        }
        Ok(None)
    }
}

/// A message of `words` words (`w0 w1 ...`), which the echo agent streams back one delta a word.
pub fn words(words: usize) -> String {
    let mut text = String::with_capacity(words * 3);
    for i in 0..words.max(1) {
        if i > 0 {
            text.push(' ');
        }
        text.push('w');
        text.push(char::from(b'0' + (i % 10) as u8));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(json: &str) -> Frame<'_> {
        serde_json::from_str(json).expect("frame")
    }

    #[test]
    fn a_turn_ends_with_its_own_reply_and_checks_the_deltas() {
        let started = Instant::now();
        let mut run = RunProgress::default();
        let steps = [
            r#"{"type":"message","message":{"role":"user","content":"w0 w1"}}"#,
            r#"{"type":"delta","run_id":"other","index":0,"text":"x"}"#,
            r#"{"type":"ack","client_msg_id":"c-1","run_id":"r1","seq":1}"#,
            r#"{"type":"run","run_id":"r1","status":"running"}"#,
            r#"{"type":"delta","run_id":"r1","index":0,"text":"w0 "}"#,
            r#"{"type":"delta","run_id":"r1","index":1,"text":"w1"}"#,
        ];
        for step in steps {
            assert!(
                matches!(run.on_frame(frame(step), "c-1", started), Ok(None)),
                "{step}"
            );
        }
        let reply = r#"{"type":"message","message":{"role":"assistant","content":"w0 w1","run_id":"r1"}}"#;
        let times = run
            .on_frame(frame(reply), "c-1", started)
            .expect("ok")
            .expect("done");
        assert_eq!((times.deltas, times.complete), (2, true));
        assert!(times.first_delta.is_some());
    }

    /// A turn sent with client message id `c`, fed its frames one at a time.
    struct Turn {
        run: RunProgress,
        started: Instant,
    }

    impl Turn {
        fn new() -> Self {
            Self {
                run: RunProgress::default(),
                started: Instant::now(),
            }
        }

        /// A turn chat-core acknowledged as run `r`.
        fn acked() -> Self {
            let mut turn = Self::new();
            let _ = turn.feed(r#"{"type":"ack","client_msg_id":"c","run_id":"r"}"#);
            turn
        }

        fn feed(&mut self, json: &str) -> Result<Option<TurnTimes>, String> {
            self.run.on_frame(frame(json), "c", self.started)
        }
    }

    #[test]
    fn a_missing_delta_makes_the_turn_incomplete() {
        let mut turn = Turn::acked();
        let _ = turn.feed(r#"{"type":"delta","run_id":"r","index":1,"text":"w1"}"#);
        let reply = r#"{"type":"message","message":{"role":"assistant","content":"w0 w1","run_id":"r"}}"#;
        let times = turn.feed(reply).expect("ok").expect("done");
        assert!(!times.complete);
    }

    #[test]
    fn failures_are_error_kinds() {
        let failed = Turn::acked().feed(r#"{"type":"run","run_id":"r","status":"failed"}"#);
        assert_eq!(failed.err().as_deref(), Some("run_failed"));
        let limited = r#"{"type":"error","code":"rate_limited","message":"slow down","client_msg_id":"c"}"#;
        assert_eq!(
            Turn::new().feed(limited).err().as_deref(),
            Some("error_frame:rate_limited")
        );
    }

    #[test]
    fn word_messages_have_the_asked_length() {
        assert_eq!(words(3), "w0 w1 w2");
        assert_eq!(words(2000).split(' ').count(), 2000);
    }
}
