//! Ordered event streams: stored messages first, then the run in flight
//! from delta 0, then live events, with duplicates dropped by `seq` and
//! `(run_id, index)`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use chat_proto::chat::v1::{self as pb, session_event::Event};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::{ChatCore, Sent, ServiceError, convert, event};
use crate::bus::BusItem;
use crate::domain::{Message, Principal, Run, RunFailure, RunId, RunStatus, SessionId};
use crate::store::MessageQuery;

use super::REPLAY_PAGE;

/// A subscription's opening: the session's last seq and the event stream.
pub struct Subscription {
    pub last_seq: i64,
    pub events: BoxStream<'static, Result<pb::SessionEvent, ServiceError>>,
}

/// How many times a catch-up reads again while runs move on under it.
const CATCH_UP_ROUNDS: usize = 4;

/// How long live events wait behind a message whose seq jumps for the
/// messages before it. A send's message and a run's reply are published by
/// different tasks (on different replicas, perhaps) after their commits, so
/// the later seq can reach the bus first, a moment ahead.
const GAP_WAIT: Duration = Duration::from_millis(250);

/// Puts live events back in seq order: a message whose seq jumps is held,
/// with every event after it, until the messages before it arrive; when
/// they do not within [`GAP_WAIT`], they were lost and the stream catches up.
#[derive(Default)]
struct InOrder {
    held: VecDeque<BusItem>,
    /// Held events to go through again, ahead of the bus.
    released: VecDeque<BusItem>,
    gap_since: Option<Instant>,
}

/// What to do with a live item.
enum Next {
    Deliver(std::sync::Arc<pb::SessionEvent>),
    /// Events were lost: catch up, then go on with the held ones.
    CatchUp,
    /// Held until the gap fills.
    Held,
}

impl InOrder {
    /// When the gap being waited on is taken as lost.
    fn deadline(&self) -> Option<Instant> {
        self.gap_since.map(|since| since + GAP_WAIT)
    }

    /// The next held event to go through again.
    fn next_released(&mut self) -> Option<BusItem> {
        self.released.pop_front()
    }

    /// Stops waiting: everything held goes through again (after a catch-up,
    /// mostly as duplicates).
    fn release(&mut self) {
        self.gap_since = None;
        let mut held = std::mem::take(&mut self.held);
        held.append(&mut self.released);
        self.released = held;
    }

    /// Sorts `item`, the stream having delivered messages up to `last_seq`.
    fn take(&mut self, item: BusItem, last_seq: i64) -> Next {
        let ev = match item {
            BusItem::Event(ev) => ev,
            BusItem::Lagged(_) | BusItem::Resync => {
                self.release();
                return Next::CatchUp;
            }
        };
        let seq = match &ev.event {
            Some(Event::Message(m)) => Some(m.seq),
            _ => None,
        };
        match (self.gap_since, seq) {
            (None, Some(seq)) if seq > last_seq + 1 => {
                self.gap_since = Some(Instant::now());
                self.held.push_back(BusItem::Event(ev));
                Next::Held
            }
            (None, _) => Next::Deliver(ev),
            (Some(_), Some(seq)) if seq == last_seq + 1 => {
                // The gap fills: this message, then what waited behind it.
                self.release();
                Next::Deliver(ev)
            }
            (Some(_), _) => {
                self.held.push_back(BusItem::Event(ev));
                Next::Held
            }
        }
    }
}

/// How many of the runs a stream saw reply, and saw end, it remembers.
const RECENT_RUNS: usize = 64;

/// The last [`RECENT_RUNS`] run ids put in, oldest forgotten first: a
/// stream lives as long as its client stays, through any number of turns.
/// Late events come only for recent runs (the live events of a run in
/// flight while a catch-up delivers its stored outcome), never for one that
/// ended dozens of turns ago: a run's events reach the bus in order, its end
/// last.
///
/// Empty, it allocates nothing (most streams are idle sockets that never
/// see a run, and each holds two of these); a lookup scans at most
/// [`RECENT_RUNS`] ids.
#[derive(Default)]
struct RecentRuns(VecDeque<String>);

impl RecentRuns {
    fn insert(&mut self, id: &str) {
        if self.contains(id) {
            return;
        }
        if self.0.len() == RECENT_RUNS {
            self.0.pop_front();
        }
        self.0.push_back(id.to_owned());
    }

    fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|known| known == id)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Tracks what a stream has delivered, to drop what it already sent.
#[derive(Default)]
struct Delivered {
    last_seq: i64,
    /// Per run: the attempt being streamed and the next delta index expected.
    next_delta: HashMap<String, (u32, u32)>,
    /// Runs whose reply was delivered.
    replied: RecentRuns,
    /// Per run not yet ended: how far the statuses delivered got (see [`progress`]).
    runs: HashMap<String, (u32, u8)>,
    /// Runs whose end was delivered.
    ended: RecentRuns,
}

impl Delivered {
    /// A stream that has delivered every message up to `last_seq`.
    fn through(last_seq: i64) -> Self {
        Self {
            last_seq,
            ..Self::default()
        }
    }

    /// Whether `event` is new to this stream; records it when it is.
    fn admit(&mut self, event: &pb::SessionEvent) -> bool {
        match &event.event {
            Some(Event::Message(m)) => {
                if m.seq <= self.last_seq {
                    return false;
                }
                self.last_seq = m.seq;
                if let Some(run_id) = &m.run_id {
                    self.replied.insert(run_id);
                }
                true
            }
            Some(Event::Delta(d)) => {
                if self.replied.contains(&d.run_id) || self.ended.contains(&d.run_id) {
                    return false;
                }
                let (attempt, next) = self.next_delta.entry(d.run_id.clone()).or_default();
                if d.attempt > *attempt {
                    // A retry streams the reply again from index 0.
                    (*attempt, *next) = (d.attempt, 0);
                }
                if d.attempt < *attempt || d.index < *next {
                    return false;
                }
                if d.index > *next {
                    // Earlier deltas are out of reach (the shared log was
                    // unavailable): stream nothing of this attempt rather
                    // than a reply with a hole; its stored message follows.
                    *next = u32::MAX;
                    return false;
                }
                *next = d.index + 1;
                true
            }
            Some(Event::Run(r)) => {
                if self.ended.contains(&r.run_id) {
                    return false;
                }
                if r.status().is_terminal() {
                    self.runs.remove(&r.run_id);
                    self.next_delta.remove(&r.run_id);
                    self.ended.insert(&r.run_id);
                    return true;
                }
                // A status the run has moved past (a catch-up's stored
                // `queued` after the live `running`, an earlier attempt's
                // `running` after a retry) would send the client back.
                let reached = progress(r);
                match self.runs.get(&r.run_id) {
                    Some(&last) if reached <= last => false,
                    _ => {
                        self.runs.insert(r.run_id.clone(), reached);
                        true
                    }
                }
            }
            Some(
                Event::Handoff(_)
                | Event::Session(_)
                | Event::ToolCall(_)
                | Event::ToolResult(_)
                | Event::Presence(_),
            ) => true,
            None => false,
        }
    }

    fn admit_into(&mut self, out: &mut Vec<pb::SessionEvent>, event: pb::SessionEvent) {
        if self.admit(&event) {
            out.push(event);
        }
    }
}

/// How far a run not yet ended has got, in the order its statuses come:
/// by attempt, then `queued`, `retrying` (a new attempt announced), `running`.
fn progress(run: &pb::RunUpdate) -> (u32, u8) {
    let step = match run.status() {
        pb::RunStatus::Running => 2,
        pb::RunStatus::Retrying => 1,
        _ => 0,
    };
    (run.attempt, step)
}

/// A run streaming somewhere in the fleet, with its deltas so far.
struct RunInFlight {
    run_id: String,
    attempt: u32,
    deltas: Vec<String>,
}

impl ChatCore {
    /// Stored messages with `after < seq < before` (or all after `after`),
    /// read a page at a time; with `charged`, each page counts against that
    /// user's replay budget.
    async fn stored_after(
        &self,
        session_id: &SessionId,
        after: i64,
        before: Option<i64>,
        charged: Option<&str>,
    ) -> Result<Vec<Message>, ServiceError> {
        let mut all = Vec::new();
        let mut cursor = after;
        loop {
            if let Some(user_id) = charged {
                if all.is_empty() {
                    self.replay.charge_first(user_id)?;
                } else {
                    self.replay.charge_next(user_id).await;
                }
            }
            let page = self
                .store
                .list_messages(MessageQuery {
                    session_id: session_id.clone(),
                    after_seq: Some(cursor),
                    before_seq: before,
                    limit: REPLAY_PAGE,
                })
                .await?;
            let full = page.len() as u64 == REPLAY_PAGE;
            if let Some(last) = page.last() {
                cursor = last.seq;
            }
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// The stored outcome of a run that has ended (its reply when completed,
    /// then its terminal status); nothing for a deleted run; `None` while it
    /// is still going.
    async fn ended_run_events(&self, run_id: &RunId) -> Result<Option<Vec<pb::SessionEvent>>, ServiceError> {
        let Some(stored) = self.store.get_run(run_id).await? else {
            return Ok(Some(Vec::new()));
        };
        let status = stored.status;
        if !status.is_terminal() {
            return Ok(None);
        }
        let mut events = Vec::new();
        if status == RunStatus::Completed
            && let Some(reply) = self.reply_of(run_id).await?
        {
            events.push(event(Event::Message(Box::new(convert::message(&reply)))));
        }
        let error = stored
            .error
            .as_deref()
            .map(RunFailure::public_of_stored)
            .unwrap_or_default();
        events.push(event(Event::Run(convert::run_update(&stored, status, &error))));
        Ok(Some(events))
    }

    /// What ends the following of a run that has ended: its stored outcome
    /// ([`ChatCore::ended_run_events`]), or the error reading it; `None`
    /// while it is still going.
    async fn run_ending(&self, run_id: &RunId) -> Option<Vec<Result<pb::SessionEvent, ServiceError>>> {
        match self.ended_run_events(run_id).await {
            Ok(events) => events.map(|events| events.into_iter().map(Ok).collect()),
            Err(e) => Some(vec![Err(e)]),
        }
    }

    /// The session's run in flight: from this replica's dispatcher, or from
    /// the shared delta log when another replica runs it.
    async fn run_in_flight(&self, session_id: &SessionId) -> Option<RunInFlight> {
        if let Some(local) = self.dispatcher.inflight(session_id) {
            return Some(RunInFlight {
                run_id: local.run_id.to_string(),
                attempt: local.attempt,
                deltas: local.snapshot(),
            });
        }
        let running = self
            .store
            .active_runs(session_id)
            .await
            .ok()?
            .into_iter()
            .find(|r| r.status == RunStatus::Running)?;
        let attempt = running.attempt;
        let deltas = self.bus.read_deltas(&running.id, attempt).await?;
        Some(RunInFlight {
            run_id: running.id.into_string(),
            attempt,
            deltas,
        })
    }

    /// The runs a catch-up reports: those active or answering a message
    /// after `since`, those the stream saw start, and `also`, as they are now.
    async fn runs_to_report(
        &self,
        session_id: &SessionId,
        since: i64,
        delivered: &Delivered,
        also: &[Run],
    ) -> Result<Vec<Run>, ServiceError> {
        // From the run answering the last delivered message itself: the
        // events lost may be its status changes (its `queued` went out right
        // after the message), and once it ended it is no longer active.
        let mut runs = self.store.runs_since(session_id, since - 1).await?;
        let missing: Vec<String> = delivered
            .runs
            .keys()
            .cloned()
            .chain(also.iter().map(|r| r.id.to_string()))
            .filter(|id| !runs.iter().any(|r| r.id.as_str() == id.as_str()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for run_id in missing {
            if let Some(run) = self.store.get_run(&RunId::from_trusted(run_id)).await? {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    /// What a stream that has delivered `delivered` is missing, oldest
    /// first: the stored messages after its last seq, then the status of
    /// every run that is active or answers one of those messages (and of runs
    /// it saw start, if they ended meanwhile), then the run in flight from
    /// delta 0. Duplicates of what it delivered are left out.
    async fn catch_up(
        &self,
        session_id: &SessionId,
        delivered: &mut Delivered,
        charged: Option<&str>,
    ) -> Result<Vec<pb::SessionEvent>, ServiceError> {
        let since = delivered.last_seq;
        let mut out = Vec::new();
        // Messages and runs come from separate reads while runs go on. The
        // runs are read before and again after the messages until both reads
        // agree: then every run whose end goes out has its reply among the
        // messages, and every message's run is among the runs.
        let mut runs = self.runs_to_report(session_id, since, delivered, &[]).await?;
        let mut messages = self.stored_after(session_id, since, None, charged).await?;
        for _ in 0..CATCH_UP_ROUNDS {
            let again = self.runs_to_report(session_id, since, delivered, &runs).await?;
            let settled = again.len() == runs.len()
                && again
                    .iter()
                    .all(|a| runs.iter().any(|r| r.id == a.id && r.status == a.status));
            runs = again;
            if settled {
                break;
            }
            let last = messages.last().map_or(since, |m| m.seq);
            messages.extend(self.stored_after(session_id, last, None, None).await?);
        }
        for message in messages {
            delivered.admit_into(
                &mut out,
                event(Event::Message(Box::new(convert::message(&message)))),
            );
        }
        runs.sort_by_key(|run| run.user_seq);
        for run in &runs {
            let error = run.error.as_deref().unwrap_or_default();
            delivered.admit_into(
                &mut out,
                event(Event::Run(convert::run_update(run, run.status, error))),
            );
        }
        if let Some(run) = self.run_in_flight(session_id).await {
            for ev in delta_events(session_id, &run.run_id, run.attempt, run.deltas) {
                delivered.admit_into(&mut out, ev);
            }
        }
        Ok(out)
    }

    /// Every message with seq > `after_seq`, the runs since, the run in
    /// flight, then live events. When live events are lost (the subscriber
    /// fell behind the bus, or the shared bus reconnected, or a seq jumps) the
    /// stream catches up from the database and the delta log again, so a
    /// subscriber never silently misses an event; it ends with an error only
    /// when that catching up fails.
    pub async fn subscribe(
        &self,
        principal: &Principal,
        session_id: &str,
        after_seq: i64,
    ) -> Result<Subscription, ServiceError> {
        let session = self.readable_session(principal, session_id).await?;
        let mut live = self.bus.subscribe(&session.id).await;
        let mut delivered = Delivered::through(after_seq.max(0));
        // A user's replay is charged; catching up after lost events is not
        // (those were the bus's to deliver).
        let charged = match principal {
            Principal::User(user_id) => Some(user_id.as_str()),
            Principal::Service(_) => None,
        };
        let opening = self.catch_up(&session.id, &mut delivered, charged).await?;
        let last_seq = delivered.last_seq.max(session.last_seq);
        let core = self.clone();
        let session_id = session.id.clone();
        // One `yield`, at the end of the loop, for everything the stream
        // hands out: the generator then keeps room for one item in flight,
        // not one per place that yields, and every idle subscription holds
        // the generator. The opening events and a catch-up's wait in `batch`,
        // whose buffer goes once they are out.
        let mut batch: VecDeque<Result<pb::SessionEvent, ServiceError>> =
            opening.into_iter().map(Ok).collect();
        let events = async_stream::stream! {
            let mut in_order = InOrder::default();
            loop {
                let next = if let Some(item) = batch.pop_front() {
                    if batch.is_empty() {
                        batch = VecDeque::new();
                    }
                    item
                } else {
                    let item = match in_order.next_released() {
                        Some(item) => item,
                        None => match in_order.deadline() {
                            None => match live.next().await {
                                Some(item) => item,
                                None => break,
                            },
                            // Boxed: a timer is as large as the rest of an idle
                            // subscription's state, and only a gap needs one.
                            Some(deadline) => match Box::pin(tokio::time::timeout_at(deadline, live.next())).await {
                                Ok(Some(item)) => item,
                                Ok(None) => break,
                                Err(_) => {
                                    tracing::debug!(%session_id, "a seq gap did not fill; catching up");
                                    BusItem::Resync
                                }
                            },
                        },
                    };
                    if let BusItem::Lagged(dropped) = item {
                        tracing::debug!(%session_id, dropped, "subscriber fell behind the bus; catching up");
                    }
                    // Messages are numbered without gaps: one that did not fill,
                    // a bus that reconnected or a subscriber that fell behind
                    // means events were lost; the database and the delta log
                    // have them.
                    match in_order.take(item, delivered.last_seq) {
                        Next::Held => continue,
                        Next::Deliver(ev) if delivered.admit(&ev) => Ok(ev.as_ref().clone()),
                        Next::Deliver(_) => continue,
                        Next::CatchUp => {
                            // In a task of its own: a catch-up holds a database
                            // connection while it reads, and this stream's reader
                            // (a connection's task) leaves it unpolled while it
                            // handles a frame, which may need a connection too.
                            // Alone, the catch-up always finishes and gives its
                            // connection back. (It also keeps the reads' state out
                            // of this stream, which every idle subscription holds.)
                            let catching_up = {
                                let (core, session_id) = (core.clone(), session_id.clone());
                                let mut taken = std::mem::take(&mut delivered);
                                tokio::spawn(async move {
                                    let missed = core.catch_up(&session_id, &mut taken, None).await;
                                    (missed, taken)
                                })
                            };
                            match catching_up.await {
                                Ok((Ok(missed), caught_up)) => {
                                    delivered = caught_up;
                                    batch = missed.into_iter().map(Ok).collect();
                                    continue;
                                }
                                Ok((Err(error), _)) => Err(error),
                                Err(failed) => Err(ServiceError::Internal(Box::new(failed))),
                            }
                        }
                    }
                };
                let failed = next.is_err();
                yield next;
                if failed {
                    break;
                }
            }
        };
        Ok(Subscription {
            last_seq,
            events: events.boxed(),
        })
    }

    /// Sends a message and follows its run: the ack first, then the run's
    /// events until it ends (right after the ack for messages without a run).
    pub async fn send_and_follow(
        &self,
        principal: &Principal,
        session_id: &str,
        client_msg_id: &str,
        post: crate::domain::Post,
        role: crate::domain::MessageRole,
        origin: crate::dispatch::RunOrigin,
    ) -> Result<
        (
            Sent,
            impl Stream<Item = Result<pb::SessionEvent, ServiceError>> + use<>,
        ),
        ServiceError,
    > {
        SessionId::parse(session_id)?;
        let mut live = self.bus.subscribe(session_id).await;
        let sent = self
            .send(principal, session_id, client_msg_id, post, role)
            .await?;
        self.announce(&sent, origin).await;
        let core = self.clone();
        let run = sent.run.clone();
        let resent = sent.ack.duplicate;
        let events = async_stream::stream! {
            let Some(run) = run else { return };
            // A resent message's run may be over: report its stored outcome.
            // A new one is followed live (the bus subscription predates it),
            // so a fast run's deltas and handoffs are never skipped.
            if resent && let Some(ending) = core.run_ending(&run.id).await {
                for item in ending {
                    yield item;
                }
                return;
            }
            let mut delivered = Delivered::default();
            if let Some(inflight) = core.dispatcher.inflight(&run.session_id).filter(|r| r.run_id == run.id) {
                for ev in delta_events(&run.session_id, &run.id, inflight.attempt, inflight.snapshot()) {
                    if delivered.admit(&ev) {
                        yield Ok(ev);
                    }
                }
            }
            while let Some(item) = live.next().await {
                let ev = match item {
                    BusItem::Event(ev) => ev,
                    BusItem::Lagged(_) | BusItem::Resync => {
                        // Events may be lost: if the run ended meanwhile,
                        // report its stored outcome; else pick its deltas up
                        // again from the run in flight.
                        if let Some(ending) = core.run_ending(&run.id).await {
                            for item in ending {
                                yield item;
                            }
                            return;
                        }
                        if let Some(inflight) = core.run_in_flight(&run.session_id).await.filter(|r| r.run_id == run.id.as_str()) {
                            for ev in delta_events(&run.session_id, &inflight.run_id, inflight.attempt, inflight.deltas) {
                                if delivered.admit(&ev) {
                                    yield Ok(ev);
                                }
                            }
                        }
                        continue;
                    }
                };
                let (ours, terminal) = match &ev.event {
                    Some(Event::Message(m)) => (m.run_id.as_deref() == Some(run.id.as_str()), false),
                    Some(Event::Delta(d)) => (run.id == d.run_id.as_str(), false),
                    Some(Event::Handoff(h)) => (run.id == h.run_id.as_str(), false),
                    Some(Event::ToolCall(t)) => (run.id == t.run_id.as_str(), false),
                    Some(Event::ToolResult(t)) => (run.id == t.run_id.as_str(), false),
                    Some(Event::Session(_)) => (true, false),
                    Some(Event::Presence(_)) => (false, false),
                    Some(Event::Run(r)) => (run.id == r.run_id.as_str(), r.status().is_terminal()),
                    None => (false, false),
                };
                if !ours {
                    continue;
                }
                if matches!(ev.event, Some(Event::Delta(_))) && !delivered.admit(&ev) {
                    continue;
                }
                yield Ok(ev.as_ref().clone());
                if terminal {
                    return;
                }
            }
        };
        Ok((sent, events))
    }
}

/// A run attempt's deltas as events, index 0 first.
fn delta_events(
    session_id: &str,
    run_id: &str,
    attempt: u32,
    deltas: Vec<String>,
) -> impl Iterator<Item = pb::SessionEvent> {
    let (session_id, run_id) = (session_id.to_owned(), run_id.to_owned());
    deltas.into_iter().enumerate().map(move |(index, text)| {
        event(Event::Delta(pb::Delta {
            session_id: session_id.clone(),
            run_id: run_id.clone(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            text,
            attempt,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn_events(run_id: &str, seq: i64) -> Vec<pb::SessionEvent> {
        let delta = event(Event::Delta(pb::Delta {
            run_id: run_id.into(),
            index: 0,
            attempt: 1,
            ..Default::default()
        }));
        let reply = event(Event::Message(Box::new(pb::Message {
            seq,
            run_id: Some(run_id.into()),
            ..Default::default()
        })));
        let completed = event(Event::Run(pb::RunUpdate {
            run_id: run_id.into(),
            status: pb::RunStatus::Completed.into(),
            attempt: 1,
            ..Default::default()
        }));
        vec![delta, reply, completed]
    }

    #[test]
    fn a_stream_through_many_turns_remembers_only_its_recent_runs() {
        let mut delivered = Delivered::default();
        for turn in 0..10 * RECENT_RUNS {
            let run_id = format!("run-{turn}");
            for ev in turn_events(&run_id, i64::try_from(turn).unwrap() + 1) {
                assert!(delivered.admit(&ev), "turn {turn}: every event is new");
            }
            // A late copy of the run's delta, as a catch-up can bring.
            assert!(!delivered.admit(&turn_events(&run_id, 0)[0]));
        }
        assert_eq!(delivered.replied.len(), RECENT_RUNS);
        assert_eq!(delivered.ended.len(), RECENT_RUNS);
        assert!(delivered.runs.is_empty() && delivered.next_delta.is_empty());
        let recent = format!("run-{}", 10 * RECENT_RUNS - RECENT_RUNS);
        assert!(
            !delivered.admit(&turn_events(&recent, 0)[2]),
            "a recent run's end is not sent twice"
        );
    }

    fn run(status: pb::RunStatus, attempt: u32) -> pb::SessionEvent {
        event(Event::Run(pb::RunUpdate {
            run_id: "r1".into(),
            status: status.into(),
            attempt,
            ..Default::default()
        }))
    }

    fn message(seq: i64) -> BusItem {
        BusItem::Event(std::sync::Arc::new(event(Event::Message(Box::new(
            pb::Message {
                seq,
                ..Default::default()
            },
        )))))
    }

    /// Feeds `items` through `in_order` as the stream would, admitting what
    /// it delivers and catching up to the store's `stored` last seq; the
    /// seqs delivered live (0 for other events), and whether it caught up.
    fn deliver(
        in_order: &mut InOrder,
        delivered: &mut Delivered,
        items: Vec<BusItem>,
        stored: i64,
    ) -> (Vec<i64>, bool) {
        let mut items: VecDeque<BusItem> = items.into();
        let (mut seqs, mut caught_up) = (Vec::new(), false);
        while let Some(item) = in_order.next_released().or_else(|| items.pop_front()) {
            match in_order.take(item, delivered.last_seq) {
                Next::Deliver(ev) => {
                    if delivered.admit(&ev) {
                        seqs.push(match &ev.event {
                            Some(Event::Message(m)) => m.seq,
                            _ => 0,
                        });
                    }
                }
                Next::CatchUp => {
                    delivered.last_seq = delivered.last_seq.max(stored);
                    caught_up = true;
                }
                Next::Held => {}
            }
        }
        (seqs, caught_up)
    }

    /// A send's message and a run's reply are published by different
    /// tasks: the later seq can come first.
    #[test]
    fn a_message_ahead_of_its_turn_waits_for_the_one_before_it() {
        let (mut in_order, mut delivered) = (InOrder::default(), Delivered::through(3));
        let status = BusItem::Event(std::sync::Arc::new(run(pb::RunStatus::Queued, 1)));

        let (seqs, caught_up) = deliver(&mut in_order, &mut delivered, vec![message(5), status], 6);
        assert_eq!(
            (seqs, caught_up),
            (vec![], false),
            "5 and what follows wait for 4"
        );
        assert!(
            in_order
                .deadline()
                .is_some_and(|d| d <= Instant::now() + GAP_WAIT)
        );

        let (seqs, caught_up) = deliver(&mut in_order, &mut delivered, vec![message(4), message(6)], 6);
        assert_eq!(
            (seqs, caught_up),
            (vec![4, 5, 0, 6], false),
            "in seq order, the status where it came"
        );
        assert!(in_order.deadline().is_none(), "nothing waits any more");
    }

    /// A gap that does not fill means events were lost: the stream catches
    /// up from the store, then what waited goes through (mostly as
    /// duplicates of what the catch-up delivered).
    #[test]
    fn a_gap_that_does_not_fill_or_a_lost_event_catches_up() {
        let (mut in_order, mut delivered) = (InOrder::default(), Delivered::through(3));
        let (seqs, _) = deliver(&mut in_order, &mut delivered, vec![message(5), message(6)], 6);
        assert!(seqs.is_empty());

        // The deadline passed: the stream hands a resync in.
        let (seqs, caught_up) = deliver(&mut in_order, &mut delivered, vec![BusItem::Resync], 6);
        assert!(caught_up);
        assert!(seqs.is_empty(), "5 and 6 came with the catch-up");
        assert!(in_order.deadline().is_none(), "nothing waits any more");
        let (seqs, _) = deliver(&mut in_order, &mut delivered, vec![message(7)], 7);
        assert_eq!(seqs, vec![7]);

        let (_, caught_up) = deliver(&mut in_order, &mut delivered, vec![BusItem::Lagged(3)], 7);
        assert!(caught_up, "a subscriber that fell behind catches up at once");
    }

    /// A catch-up reads run statuses from the store while live events go
    /// on, so a status may come again after the run moved past it.
    #[test]
    fn a_run_status_the_stream_has_moved_past_is_dropped() {
        use pb::RunStatus::{Completed, Queued, Retrying, Running};
        let mut delivered = Delivered::default();
        let admitted: Vec<bool> = [
            (Queued, 1),
            (Running, 1),
            (Queued, 1),
            (Running, 1),
            (Retrying, 2),
            (Running, 1),
            (Running, 2),
            (Retrying, 2),
            (Completed, 2),
            (Running, 2),
        ]
        .into_iter()
        .map(|(status, attempt)| delivered.admit(&run(status, attempt)))
        .collect();
        assert_eq!(
            admitted,
            [true, true, false, false, true, false, true, false, true, false]
        );
    }
}
