//! The Redis bus: events published on `chat:events:<session id>` channels so
//! every chat-core replica's subscribers see them. Each replica holds one
//! Redis subscription per session that has local subscribers, and fans out
//! locally. A message carries one publish: an event, or a run's events
//! relayed together ([`EventBatch`]), so a burst of deltas is one message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chat_proto::chat::v1::SessionEvent;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use prost::Message as _;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::{BusItem, DeltaLog, EventBus, InProcessBus, Notice, NoticeKind};

const CHANNEL_PREFIX: &str = "chat:events:";
/// Every kind of [`Notice`]: each has a channel every replica subscribes to.
const NOTICE_KINDS: [NoticeKind; 2] = [NoticeKind::Revoked, NoticeKind::Cancelled];

/// The channel on which a replica names, once it reaches Redis again, each
/// session whose events it could deliver only to its own subscribers while
/// Redis was away: every replica's subscribers of those sessions catch up
/// from the database. (A replica whose own link dropped catches up when it
/// reconnects; this covers the replicas whose link stayed up meanwhile.)
const RESYNC_CHANNEL: &str = "chat:resync";
/// How long a replica waits before publishing what it owes again when Redis
/// is still away (it waits for nothing while it owes nothing).
const ANNOUNCE_RETRY: Duration = Duration::from_millis(200);
/// Messages a replica keeps owing at most (a few MB): past it, through a
/// long outage, what is owed besides is dropped. The other replicas then
/// rely on the backstops: subscribers that see a gap in a session's seqs,
/// or reconnect, catch up; revoked tokens expire; a cancelled run stops at
/// its next lease renewal.
const MAX_OWED: usize = 65_536;

/// A message a replica owes the others: published once its link to Redis is
/// back, by [`announce_owed`]. A notice heard late is still heard: a
/// revocation carries when it was made, and a cancellation names one run, so
/// hearing either twice changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Owed {
    /// A session whose events it delivered only locally, to name on
    /// [`RESYNC_CHANNEL`].
    Resync(String),
    /// A notice it could tell only itself, for its own channel.
    Notice(Notice),
}

/// The error of a command not sent because the client is not connected.
fn not_connected() -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::IO, "not connected")
}

/// The channels every replica subscribes to besides sessions': the notices'
/// and [`RESYNC_CHANNEL`].
fn shared_channels() -> Vec<String> {
    NOTICE_KINDS
        .map(|kind| notice_channel(kind).to_owned())
        .into_iter()
        .chain([RESYNC_CHANNEL.to_owned()])
        .collect()
}

/// The channel of a kind of notice; each message is the notice's id.
fn notice_channel(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Revoked => "chat:revoked",
        NoticeKind::Cancelled => "chat:cancelled",
    }
}

/// The kind of notice `channel` carries, if it is a notice channel.
fn notice_kind(channel: &str) -> Option<NoticeKind> {
    NOTICE_KINDS
        .into_iter()
        .find(|&kind| notice_channel(kind) == channel)
}

/// The list that keeps the latest notices published on `channel`, newest
/// first: a replica whose subscriber was away from Redis when one was
/// published reads them once it is subscribed again ([`replay_notice_logs`]),
/// and a replica applies the revocations before it serves
/// ([`kept_notices`]). One list per kind, so a burst
/// of cancellations pushes out no revocation.
fn notice_log(channel: &str) -> String {
    format!("{channel}:log")
}

/// Notices of each kind kept in its [`notice_log`]: well within what a local
/// listener may fall behind by when they are replayed at once.
const NOTICE_LOG_LEN: i64 = 512;
/// How long a [`notice_log`] outlives its latest notice.
const NOTICE_LOG_TTL_SECS: i64 = 24 * 3600;
/// How long a replica whose subscriber is back on Redis keeps trying to read
/// the notice logs (its publisher may reconnect later).
const NOTICE_LOG_READ_FOR: Duration = Duration::from_secs(60);
/// The longest pause between those tries.
const NOTICE_LOG_RETRY_MAX: Duration = Duration::from_secs(5);

/// Records `id` in `channel`'s [`notice_log`] and publishes it on `channel`,
/// in one pipeline. Whether the publish went out is what counts: the other
/// replicas hear it now; a log that could not be written is only logged.
async fn publish_notice_on(publisher: &Client, channel: &str, id: &str) -> Result<(), fred::error::Error> {
    let log = notice_log(channel);
    let pipeline = publisher.pipeline();
    let _: Result<(), _> = pipeline.lpush(&log, id).await;
    let _: Result<(), _> = pipeline.ltrim(&log, 0, NOTICE_LOG_LEN - 1).await;
    let _: Result<(), _> = pipeline.expire(&log, NOTICE_LOG_TTL_SECS, None).await;
    let _: Result<(), _> = pipeline.publish(channel, id).await;
    let mut results = pipeline.try_all::<Value>().await;
    let published = results.pop().unwrap_or_else(|| {
        Err(fred::error::Error::new(
            fred::error::ErrorKind::Unknown,
            "no reply",
        ))
    });
    if published.is_ok()
        && let Some(Err(error)) = results.into_iter().find(Result::is_err)
    {
        warn!(%error, channel, "failed to keep a notice in redis for replicas away from it");
    }
    published.map(drop)
}

/// The ids of the notices of `kind` its [`notice_log`] keeps, oldest first.
async fn kept_notices(publisher: &Client, kind: NoticeKind) -> Result<Vec<String>, fred::error::Error> {
    if !publisher.is_connected() {
        return Err(not_connected());
    }
    let mut ids: Vec<String> = publisher.lrange(notice_log(notice_channel(kind)), 0, -1).await?;
    ids.reverse();
    Ok(ids)
}

/// Hands `local`'s listeners every notice the [`notice_log`]s keep, oldest
/// first within each kind.
async fn replay_notice_logs(publisher: &Client, local: &InProcessBus) -> Result<(), fred::error::Error> {
    for kind in NOTICE_KINDS {
        for id in kept_notices(publisher, kind).await? {
            local.notify(Notice::new(kind, &id));
        }
    }
    Ok(())
}

/// Hands this replica's listeners every notice the [`notice_log`]s keep:
/// those published while its subscriber was away from Redis among them
/// (hearing the others again changes nothing). Tries for up to
/// [`NOTICE_LOG_READ_FOR`] while the publisher is not back.
async fn replay_notices(publisher: Client, local: InProcessBus) {
    let deadline = tokio::time::Instant::now() + NOTICE_LOG_READ_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        match replay_notice_logs(&publisher, &local).await {
            Ok(()) => return,
            Err(error) if tokio::time::Instant::now() + pause < deadline => {
                debug!(%error, "reading the notices published while redis was away failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(NOTICE_LOG_RETRY_MAX);
            }
            Err(error) => {
                warn!(%error, "failed to read the notices published while redis was away");
                return;
            }
        }
    }
}

/// Longest a Redis command may take; past it the bus carries on without Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Messages (each a batch of events) received from Redis that may wait for
/// the relay task before the oldest are dropped (and every local subscriber
/// resyncs). The Redis client allocates this many slots up front for each of
/// its notification channels.
const RELAY_CAPACITY: usize = 1024;
/// How long a run's delta log outlives its last write.
const DELTA_LOG_TTL_SECS: i64 = 600;

/// What one message on a session's channel carries: the events of one
/// publish, in order.
#[derive(Clone, PartialEq, prost::Message)]
struct EventBatch {
    #[prost(message, repeated, tag = "1")]
    events: Vec<SessionEvent>,
}

fn delta_key(run_id: &str, attempt: u32) -> String {
    format!("chat:run:{run_id}:{attempt}:deltas")
}

fn channel(session_id: &str) -> String {
    format!("{CHANNEL_PREFIX}{session_id}")
}

/// The texts of `index:text` entries when they run 0, 1, 2, … without a hole.
fn contiguous(entries: Vec<String>) -> Option<Vec<String>> {
    entries
        .into_iter()
        .enumerate()
        .map(|(position, entry)| {
            let (index, text) = entry.split_once(':')?;
            (index.parse::<usize>().ok()? == position).then(|| text.to_owned())
        })
        .collect()
}

/// Connection settings of both clients: `TCP_NODELAY`, as on every socket
/// of the request path (a publish must not wait for Redis's delayed ACK).
fn connection_config(config: &mut ConnectionConfig) {
    config.connection_timeout = Duration::from_secs(5);
    config.tcp.nodelay = Some(true);
}

/// Fan-out across replicas through Redis pub/sub.
#[derive(Clone)]
pub struct RedisBus {
    publisher: Client,
    subscriber: SubscriberClient,
    local: InProcessBus,
    /// Local subscribers per session; the Redis subscription lives while
    /// there are any.
    counts: Arc<Mutex<HashMap<String, Held>>>,
    /// Whether the subscriber's channels are subscribed on its current
    /// connection: false from a reconnect until every channel is subscribed
    /// again and every local subscriber told to resync, so readiness stays
    /// red until then.
    subscribed: Arc<AtomicBool>,
    /// What this replica could tell only itself while Redis was away, for
    /// [`announce_owed`] to publish once it is back.
    owed: tokio::sync::mpsc::UnboundedSender<Owed>,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to connect to redis: {0}")]
pub struct RedisBusError(#[from] fred::error::Error);

impl RedisBus {
    /// Connects both clients and starts relaying subscribed channels;
    /// `subscriber_buffer` bounds how many publishes a local subscriber may
    /// fall behind.
    pub async fn connect(url: &str, subscriber_buffer: usize) -> Result<Self, RedisBusError> {
        let config = Config::from_url(url)?;
        let policy = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
        let publisher = Builder::from_config(config.clone())
            .set_policy(policy.clone())
            .with_connection_config(connection_config)
            .with_performance_config(|c| c.default_command_timeout = COMMAND_TIMEOUT)
            .build()?;
        let subscriber = Builder::from_config(config)
            .set_policy(policy)
            .with_connection_config(connection_config)
            .with_performance_config(|c| {
                c.default_command_timeout = COMMAND_TIMEOUT;
                c.broadcast_channel_capacity = RELAY_CAPACITY;
            })
            .build_subscriber_client()?;
        publisher.init().await?;
        subscriber.init().await?;
        let local = InProcessBus::new(subscriber_buffer);
        // After a reconnect: subscribe again, then have every local
        // subscriber re-read what it may have missed meanwhile.
        let counts: Arc<Mutex<HashMap<String, Held>>> = Arc::default();
        let subscribed = Arc::new(AtomicBool::new(true));
        let mut reconnects = subscriber.reconnect_rx();
        let (resubscriber, resync, sessions) = (subscriber.clone(), local.clone(), counts.clone());
        let notice_reader = publisher.clone();
        let resubscribed = subscribed.clone();
        tokio::spawn(async move {
            let mut replaying: Option<tokio::task::JoinHandle<()>> = None;
            while let Ok(server) = reconnects.recv().await {
                resubscribed.store(false, Ordering::Release);
                // Every session with local subscribers, including any whose
                // SUBSCRIBE failed while Redis was away.
                let mut channels: Vec<String> = sessions.lock().await.keys().map(|s| channel(s)).collect();
                channels.extend(shared_channels());
                // The PING's answer means Redis has the subscriptions (see
                // `RedisBus::confirm`) before subscribers re-read.
                let subscribe_again = async {
                    resubscriber.subscribe(channels).await?;
                    resubscriber.ping::<Value>(None).await
                };
                if let Err(error) = subscribe_again.await {
                    warn!(%error, "redis resubscribe failed");
                }
                info!(%server, "redis reconnected; subscribers resync");
                resync.resync_all();
                resubscribed.store(true, Ordering::Release);
                // Apart, so a publisher slow to reconnect holds up nothing
                // else; one at a time on a link that keeps dropping.
                if let Some(earlier) = replaying.take() {
                    earlier.abort();
                }
                replaying = Some(tokio::spawn(replay_notices(
                    notice_reader.clone(),
                    resync.clone(),
                )));
            }
        });
        let mut messages = subscriber.message_rx();
        let relay = local.clone();
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        if message.channel == RESYNC_CHANNEL {
                            if let Some(session_id) = message.value.as_str() {
                                relay.resync(&session_id);
                            }
                            continue;
                        }
                        if let Some(kind) = notice_kind(&message.channel) {
                            if let Some(id) = message.value.as_str() {
                                relay.notify(Notice::new(kind, &id));
                            }
                            continue;
                        }
                        let Some(session_id) = message.channel.strip_prefix(CHANNEL_PREFIX) else {
                            continue;
                        };
                        let Some(bytes) = message.value.as_bytes() else {
                            continue;
                        };
                        match EventBatch::decode(bytes) {
                            Ok(batch) => relay.send(session_id, batch.events),
                            Err(error) => warn!(%error, "undecodable events on redis"),
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Which sessions lost events is unknown: every local
                        // subscriber catches up from the database.
                        warn!(dropped = n, "redis relay fell behind; subscribers resync");
                        relay.resync_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        subscriber.subscribe(shared_channels()).await?;
        let _: Value = subscriber.ping(None).await?;
        let (owed, to_announce) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(announce_owed(publisher.clone(), to_announce));
        Ok(Self {
            publisher,
            subscriber,
            local,
            counts,
            subscribed,
            owed,
        })
    }
}

/// Publishes each message `owed` brings once `publisher` reaches Redis; ends
/// with the bus (its senders).
async fn announce_owed(publisher: Client, mut owed: tokio::sync::mpsc::UnboundedReceiver<Owed>) {
    let mut pending = Pending::default();
    loop {
        // Parked until something is owed; while some of it waits for Redis,
        // woken every `ANNOUNCE_RETRY` to try again.
        let received = if pending.is_empty() {
            Some(owed.recv().await)
        } else {
            tokio::time::timeout(ANNOUNCE_RETRY, owed.recv()).await.ok()
        };
        match received {
            Some(Some(message)) => pending.add(message),
            Some(None) => return,
            None => {}
        }
        while let Ok(message) = owed.try_recv() {
            pending.add(message);
        }
        if !publisher.is_connected() {
            continue;
        }
        let mut published = Vec::new();
        for owed in &pending.messages {
            let sent = match owed {
                Owed::Resync(session_id) => publisher.publish(RESYNC_CHANNEL, session_id.as_str()).await,
                Owed::Notice(notice) => {
                    publish_notice_on(&publisher, notice_channel(notice.kind), &notice.id).await
                }
            };
            match sent {
                Ok(()) => published.push(owed.clone()),
                Err(error) => {
                    debug!(%error, ?owed, "redis publish of an owed message failed; trying again later");
                    break;
                }
            }
        }
        for owed in &published {
            pending.remove(owed);
        }
    }
}

/// What [`announce_owed`] still has to publish, up to [`MAX_OWED`].
#[derive(Default)]
struct Pending {
    messages: HashSet<Owed>,
    /// Whether messages were dropped since it was last empty (one warning
    /// per outage).
    dropping: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Forgets a message once it is published; once none is left, the next
    /// outage may warn again.
    fn remove(&mut self, message: &Owed) {
        self.messages.remove(message);
        if self.messages.is_empty() {
            self.dropping = false;
        }
    }

    fn add(&mut self, message: Owed) {
        if self.messages.len() < MAX_OWED {
            self.messages.insert(message);
        } else if !self.dropping && !self.messages.contains(&message) {
            self.dropping = true;
            warn!(
                max = MAX_OWED,
                "owing the other replicas too much while Redis is away; dropping the rest"
            );
        }
    }
}

/// A local subscription that releases its Redis channel when dropped.
struct Release<S> {
    inner: S,
    bus: RedisBus,
    session_id: String,
}

impl<S> Drop for Release<S> {
    fn drop(&mut self) {
        let bus = self.bus.clone();
        let session_id = std::mem::take(&mut self.session_id);
        tokio::spawn(async move {
            let mut counts = bus.counts.lock().await;
            let Some(held) = counts.get_mut(&session_id) else {
                return;
            };
            held.subscribers -= 1;
            if held.subscribers == 0 {
                counts.remove(&session_id);
                if let Err(error) = bus.subscriber.unsubscribe(channel(&session_id)).await {
                    debug!(%error, "redis unsubscribe failed");
                }
            }
        });
    }
}

impl<S: Stream<Item = BusItem> + Unpin> Stream for Release<S> {
    type Item = BusItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<BusItem>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// A session's Redis subscription, as this replica holds it.
#[derive(Default)]
struct Held {
    /// Local subscribers.
    subscribers: usize,
    /// Whether Redis has confirmed the subscription (see [`RedisBus::confirm`]);
    /// until then each new subscriber waits for a confirmation of its own.
    confirmed: bool,
}

/// Backoff between attempts to subscribe a session's channel again.
const RESUBSCRIBE_FIRST_DELAY: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(5);

impl RedisBus {
    /// Waits until Redis has the subscription whose SUBSCRIBE was `written`:
    /// the client's SUBSCRIBE resolves once it is written, so a PING follows
    /// on the same connection, and Redis answers a connection's commands in
    /// order. Until then another replica's publish could reach Redis first
    /// and be missed. The PING waits outside the counts lock, so sessions
    /// subscribe concurrently, and only until the session's subscription is
    /// confirmed once.
    async fn confirm(&self, written: Result<(), fred::error::Error>) -> Result<(), fred::error::Error> {
        written?;
        let _: Value = self.subscriber.ping(None).await?;
        Ok(())
    }

    /// Records that Redis has the session's subscription, so later
    /// subscribers need no round trip.
    async fn confirmed(&self, session_id: &str) {
        if let Some(held) = self.counts.lock().await.get_mut(session_id) {
            held.confirmed = true;
        }
    }

    /// Retries a session's subscription in the background while the session
    /// has local subscribers (a reconnect alone would not: it can fail on a
    /// live connection, for example by timing out under load). Once
    /// confirmed, the session's subscribers re-read the database for what
    /// other replicas published meanwhile.
    fn retry_subscribe(&self, session_id: String) {
        let bus = self.clone();
        tokio::spawn(async move {
            let mut delay = RESUBSCRIBE_FIRST_DELAY;
            loop {
                tokio::time::sleep(delay).await;
                let written = {
                    // Under the lock, so a last subscriber leaving cannot
                    // unsubscribe between the check and the SUBSCRIBE.
                    let counts = bus.counts.lock().await;
                    if !counts.contains_key(&session_id) {
                        return;
                    }
                    bus.subscriber.subscribe(channel(&session_id)).await
                };
                match bus.confirm(written).await {
                    Ok(()) => {
                        bus.confirmed(&session_id).await;
                        info!(
                            session_id,
                            "redis subscribe recovered; the session's subscribers resync"
                        );
                        bus.local.resync(&session_id);
                        return;
                    }
                    Err(error) => debug!(%error, session_id, "redis subscribe retry failed"),
                }
                delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
            }
        });
    }

    /// Publishes `notice` on its channel, which every replica's relay hands
    /// to its local bus (this replica's included), and records it in its
    /// [`notice_log`] for replicas away from Redis meanwhile. Without Redis
    /// this replica is told at once and the others once its link is back
    /// ([`Owed`]); until then they accept a revoked sign-in's access tokens
    /// (up to their expiry), and stop a cancelled run at its next lease
    /// renewal.
    async fn publish_notice(&self, notice: Notice) {
        let channel = notice_channel(notice.kind);
        let published = if self.publisher.is_connected() {
            publish_notice_on(&self.publisher, channel, &notice.id).await
        } else {
            Err(not_connected())
        };
        if let Err(error) = published {
            warn!(%error, channel, "redis publish of a notice failed; telling this replica now, the others once Redis is back");
            self.owe(Owed::Notice(notice.clone()));
            self.local.notify(notice);
        }
    }

    /// One pipeline: the delta log's new entries first (a subscriber that
    /// catches up after seeing a delta finds it in the log), then the events
    /// as one message, then the log `clear`ed (the run's outcome is stored).
    async fn publish_pipelined(
        &self,
        session_id: &str,
        events: Vec<SessionEvent>,
        deltas: Option<DeltaLog<'_>>,
        clear: Option<String>,
    ) {
        if !self.publisher.is_connected() {
            // Redis is down: this replica's own subscribers are still served,
            // and other replicas' subscribers catch up once this replica
            // names the session (`RESYNC_CHANNEL`). A log left uncleared
            // expires.
            self.deliver_locally(session_id, events);
            return;
        }
        let pipeline = self.publisher.pipeline();
        if let Some(log) = deltas.filter(|log| !log.texts.is_empty()) {
            let key = delta_key(log.run_id, log.attempt);
            let entries: Vec<String> = (log.first_index..)
                .zip(&log.texts)
                .map(|(index, text)| format!("{index}:{text}"))
                .collect();
            let _: Result<(), _> = pipeline.rpush(&key, entries).await;
            let _: Result<(), _> = pipeline.expire(&key, DELTA_LOG_TTL_SECS, None).await;
        }
        let batch = EventBatch { events };
        if !batch.events.is_empty() {
            let message = Bytes::from(batch.encode_to_vec());
            let _: Result<(), _> = pipeline.publish(channel(session_id), message).await;
        }
        if let Some(key) = clear {
            let _: Result<(), _> = pipeline.del(key).await;
        }
        if let Err(error) = pipeline.all::<Value>().await {
            warn!(%error, "redis publish failed; delivering locally only");
            self.deliver_locally(session_id, batch.events);
        }
    }

    /// Hands `events` to this replica's subscribers only, and keeps the
    /// session to name on [`RESYNC_CHANNEL`] once Redis is back.
    fn deliver_locally(&self, session_id: &str, events: Vec<SessionEvent>) {
        if events.is_empty() {
            return;
        }
        self.local.send(session_id, events);
        self.owe(Owed::Resync(session_id.to_owned()));
    }

    /// Has [`announce_owed`] publish `owed` once Redis is back.
    fn owe(&self, owed: Owed) {
        // The announcer ends only with the bus, so this cannot fail.
        let _ = self.owed.send(owed);
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, session_id: &str, event: SessionEvent) {
        self.publish_batch(session_id, vec![event], None).await;
    }

    async fn publish_batch(&self, session_id: &str, events: Vec<SessionEvent>, deltas: Option<DeltaLog<'_>>) {
        self.publish_pipelined(session_id, events, deltas, None).await;
    }

    async fn publish_ending(&self, session_id: &str, events: Vec<SessionEvent>, run_id: &str, attempt: u32) {
        self.publish_pipelined(session_id, events, None, Some(delta_key(run_id, attempt)))
            .await;
    }

    async fn subscribe(&self, session_id: &str) -> BoxStream<'static, BusItem> {
        // The local receiver exists before the Redis subscription, so
        // nothing relayed after SUBSCRIBE completes is missed.
        let inner = self.local.subscribe(session_id).await;
        let (written, confirmed) = {
            let mut counts = self.counts.lock().await;
            let held = counts.entry(session_id.to_owned()).or_default();
            held.subscribers += 1;
            if held.subscribers == 1 {
                (self.subscriber.subscribe(channel(session_id)).await, false)
            } else {
                // The first subscriber's SUBSCRIBE was written before: while
                // it is not confirmed, this one's PING confirms it all the same.
                (Ok(()), held.confirmed)
            }
        };
        if !confirmed {
            match self.confirm(written).await {
                Ok(()) => self.confirmed(session_id).await,
                Err(error) => {
                    warn!(%error, session_id, "redis subscribe failed; local events only until a retry succeeds");
                    self.retry_subscribe(session_id.to_owned());
                }
            }
        }
        Release {
            inner,
            bus: self.clone(),
            session_id: session_id.to_owned(),
        }
        .boxed()
    }

    async fn publish_revocation(&self, user_id: &str) {
        self.publish_notice(Notice::new(NoticeKind::Revoked, user_id))
            .await;
    }

    fn revocations(&self) -> BoxStream<'static, String> {
        self.local.revocations()
    }

    async fn publish_cancellation(&self, run_id: &str) {
        self.publish_notice(Notice::new(NoticeKind::Cancelled, run_id))
            .await;
    }

    async fn kept_revocations(&self) -> Vec<String> {
        match kept_notices(&self.publisher, NoticeKind::Revoked).await {
            Ok(ids) => ids,
            Err(error) => {
                // Served without them meanwhile: the listeners hear them
                // once Redis answers (the same read as after a reconnect).
                warn!(%error, "failed to read the latest revocations from redis; reading them again in the background");
                tokio::spawn(replay_notices(self.publisher.clone(), self.local.clone()));
                Vec::new()
            }
        }
    }

    fn cancellations(&self) -> BoxStream<'static, String> {
        self.local.cancellations()
    }

    async fn append_delta(&self, run_id: &str, attempt: u32, index: u32, text: &str) {
        if !self.publisher.is_connected() {
            return;
        }
        let key = delta_key(run_id, attempt);
        let pipeline = self.publisher.pipeline();
        // Each entry carries its index: a log that lost entries (Redis
        // restarted) is detected on read instead of misnumbering deltas.
        let _: Result<(), _> = pipeline.rpush(&key, format!("{index}:{text}")).await;
        let _: Result<(), _> = pipeline.expire(&key, DELTA_LOG_TTL_SECS, None).await;
        if let Err(error) = pipeline.all::<()>().await {
            debug!(%error, run_id, "failed to record delta in redis");
        }
    }

    async fn read_deltas(&self, run_id: &str, attempt: u32) -> Option<Vec<String>> {
        if !self.publisher.is_connected() {
            return None;
        }
        match self
            .publisher
            .lrange::<Vec<String>, _>(delta_key(run_id, attempt), 0, -1)
            .await
        {
            Ok(entries) => contiguous(entries),
            Err(error) => {
                warn!(%error, run_id, "failed to read deltas from redis");
                None
            }
        }
    }

    fn is_connected(&self) -> Option<bool> {
        Some(
            self.publisher.is_connected()
                && self.subscriber.is_connected()
                && self.subscribed.load(Ordering::Acquire),
        )
    }

    async fn clear_deltas(&self, run_id: &str, attempt: u32) {
        let _: Result<(), _> = self.publisher.del(delta_key(run_id, attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_OWED, Owed, Pending, contiguous};

    #[test]
    fn what_a_replica_owes_is_kept_once_each_and_bounded() {
        let owed = |i: usize| Owed::Resync(format!("session-{i}"));
        let mut pending = Pending::default();
        pending.add(owed(0));
        pending.add(owed(0));
        assert_eq!(pending.messages.len(), 1, "a session named twice is owed once");
        for i in 0..MAX_OWED + 10 {
            pending.add(owed(i));
        }
        assert_eq!(pending.messages.len(), MAX_OWED);
        assert!(pending.dropping);
        assert!(
            !pending.messages.contains(&owed(MAX_OWED)),
            "past the bound, nothing more is kept"
        );
        for i in 0..MAX_OWED {
            pending.remove(&owed(i));
        }
        assert!(pending.is_empty());
        assert!(
            !pending.dropping,
            "once all is published, the next outage warns again"
        );
    }

    #[test]
    fn delta_logs_with_holes_are_refused() {
        let log = |entries: &[&str]| contiguous(entries.iter().map(|e| (*e).to_owned()).collect());
        assert_eq!(
            log(&["0:he", "1:llo: you"]),
            Some(vec!["he".to_owned(), "llo: you".to_owned()])
        );
        assert_eq!(log(&[]), Some(vec![]));
        assert_eq!(log(&["3:lo", "4:st"]), None, "entries lost before index 3");
        assert_eq!(log(&["0:a", "2:c"]), None);
    }
}
