//! The agent-worker fleet, routed by agent.
//!
//! Worker URLs may name IP addresses or DNS names (a Kubernetes headless
//! service); [`chat_common::discovery`] keeps the set of worker endpoints
//! current. The pool asks each worker which agents it serves when it joins,
//! and again every `resolve_every`, and sends each run to the least busy
//! worker that serves the run's agent. `ListAgents` is the union of the
//! fleet. A worker that has not answered `ListAgents` yet gets no runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chat_common::discovery::{self, Endpoints};
use chat_common::inproc;
use chat_common::token::SelfSigned;
use chat_proto::agent::v1::{self as agent, agent_worker_client::AgentWorkerClient};
use futures::future::join_all;
use tokio::sync::{Mutex, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

/// A worker's client: every call carries chat-core's own service token.
type WorkerClient = AgentWorkerClient<InterceptedService<inproc::Channel, SelfSigned>>;

/// How chat-core reaches workers: the token it proves itself with, and TLS.
#[derive(Clone, Debug)]
pub struct WorkerLink {
    pub token: SelfSigned,
    /// Trust anchors (and a client certificate for mutual TLS) for `https://` workers.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// How long a worker may take to answer `ListAgents`.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// Client for every agent-worker, routing each run by agent.
#[derive(Clone, Debug)]
pub struct WorkerPool {
    inner: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    link: WorkerLink,
    dial: Dial,
    endpoints: watch::Receiver<Endpoints>,
    workers: RwLock<BTreeMap<String, Worker>>,
    /// Serialises refreshes: concurrent callers wait for the one running.
    refreshing: Mutex<()>,
    /// Rotates the starting point among equally busy workers.
    next: AtomicUsize,
}

#[derive(Clone, Debug)]
struct Worker {
    client: WorkerClient,
    /// What it serves; `None` until it answered `ListAgents`.
    agents: Option<Vec<agent::AgentInfo>>,
    /// Runs this replica has running on it.
    in_flight: Arc<AtomicUsize>,
}

impl Worker {
    fn serves(&self, name: &str) -> bool {
        self.agents
            .as_ref()
            .is_some_and(|agents| agents.iter().any(|a| a.name == name))
    }
}

/// How the pool connects to its workers.
#[derive(Debug)]
enum Dial {
    /// Over the network, to each endpoint.
    Network,
    /// Directly, to the one worker of this process (the all-in-one).
    InProcess(inproc::Connector),
}

/// The endpoint that stands for the worker of this process.
const IN_PROCESS_URL: &str = "http://agent-worker.in-process";

/// A run streaming from a worker; counts against the worker while held.
pub struct RunStream {
    pub events: tonic::Streaming<agent::RunEvent>,
    _in_flight: InFlight,
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

fn client(url: &str, link: &WorkerLink, dial: &Dial) -> Result<WorkerClient, tonic::transport::Error> {
    let channel = match dial {
        Dial::Network => match &link.tls {
            Some(tls) => endpoint(url)?.tls_config(tls.clone())?.connect_lazy().into(),
            None => endpoint(url)?.connect_lazy().into(),
        },
        Dial::InProcess(connector) => connector.clone().into(),
    };
    Ok(AgentWorkerClient::with_interceptor(channel, link.token.clone())
        .max_decoding_message_size(chat_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(chat_proto::MAX_MESSAGE_BYTES))
}

async fn list_agents(mut client: WorkerClient) -> Result<Vec<agent::AgentInfo>, tonic::Status> {
    let mut request = tonic::Request::new(agent::ListAgentsRequest {});
    request.set_timeout(LIST_TIMEOUT);
    let response = tokio::time::timeout(LIST_TIMEOUT, client.list_agents(request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("ListAgents timed out"))??;
    Ok(response.into_inner().agents)
}

impl WorkerPool {
    /// Builds the pool over `urls`, learns what each worker serves, and keeps
    /// both current every `resolve_every`.
    pub async fn new(urls: &[String], resolve_every: Duration, link: WorkerLink) -> Result<Self, String> {
        let endpoints = discovery::watch(urls, resolve_every)
            .await
            .map_err(|e| format!("agent-worker urls: {e}"))?;
        Ok(Self::start(endpoints, resolve_every, link, Dial::Network))
    }

    /// The pool of the one worker in this process, called directly
    /// through `worker` (the all-in-one); what it serves is kept current
    /// every `resolve_every`.
    pub fn in_process(worker: inproc::Connector, resolve_every: Duration, link: WorkerLink) -> Self {
        let (_, endpoints) = watch::channel(Endpoints::from([IN_PROCESS_URL.to_owned()]));
        Self::start(endpoints, resolve_every, link, Dial::InProcess(worker))
    }

    fn start(
        endpoints: watch::Receiver<Endpoints>,
        resolve_every: Duration,
        link: WorkerLink,
        dial: Dial,
    ) -> Self {
        let pool = Self {
            inner: Arc::new(Pool {
                link,
                dial,
                endpoints,
                workers: RwLock::default(),
                refreshing: Mutex::new(()),
                next: AtomicUsize::new(0),
            }),
        };
        // Workers are asked what they serve in the background: one that is not
        // up yet (the all-in-one starts its worker after chat-core is built)
        // must not hold start-up for the call's timeout. A run or a listing
        // that finds nothing known asks again itself.
        let weak = Arc::downgrade(&pool.inner);
        let mut changes = pool.inner.endpoints.clone();
        let first = pool.clone();
        tokio::spawn(async move {
            first.refresh().await;
            drop(first);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(resolve_every) => {}
                    changed = changes.changed() => if changed.is_err() {
                        // Fixed addresses: keep refreshing what they serve.
                        tokio::time::sleep(resolve_every).await;
                    },
                }
                let Some(inner) = weak.upgrade() else { return };
                WorkerPool { inner }.refresh().await;
            }
        });
        pool
    }

    /// Brings the workers in line with the endpoints, and asks every worker
    /// what it serves.
    async fn refresh(&self) {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let wanted: BTreeSet<String> = self.inner.endpoints.borrow().clone();
        let known: Vec<(String, WorkerClient)> = {
            let mut workers = self.inner.workers.write().unwrap_or_else(|e| e.into_inner());
            workers.retain(|url, _| {
                let keep = wanted.contains(url);
                if !keep {
                    info!(worker = %url, "agent-worker left the pool");
                }
                keep
            });
            for url in &wanted {
                if workers.contains_key(url) {
                    continue;
                }
                match client(url, &self.inner.link, &self.inner.dial) {
                    Ok(client) => {
                        workers.insert(
                            url.clone(),
                            Worker {
                                client,
                                agents: None,
                                in_flight: Arc::default(),
                            },
                        );
                    }
                    Err(error) => warn!(worker = %url, %error, "invalid agent-worker endpoint"),
                }
            }
            workers
                .iter()
                .map(|(url, worker)| (url.clone(), worker.client.clone()))
                .collect()
        };
        let answers = join_all(known.into_iter().map(|(url, client)| async move {
            let answer = list_agents(client).await;
            (url, answer)
        }))
        .await;
        let mut workers = self.inner.workers.write().unwrap_or_else(|e| e.into_inner());
        for (url, answer) in answers {
            let Some(worker) = workers.get_mut(&url) else {
                continue;
            };
            match answer {
                Ok(agents) => {
                    if worker.agents.as_ref() != Some(&agents) {
                        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
                        info!(worker = %url, agents = ?names, "agent-worker serves");
                    }
                    worker.agents = Some(agents);
                }
                Err(status) => {
                    if worker.agents.is_some() {
                        warn!(worker = %url, code = ?status.code(), "agent-worker stopped answering; no runs until it does");
                    } else {
                        debug!(worker = %url, code = ?status.code(), "agent-worker not answering yet");
                    }
                    worker.agents = None;
                }
            }
        }
    }

    /// Workers serving `agent`, least busy first (ties rotate).
    fn candidates(&self, agent: &str) -> Vec<(Worker, String)> {
        let workers = self.inner.workers.read().unwrap_or_else(|e| e.into_inner());
        let mut serving: Vec<(Worker, String)> = workers
            .iter()
            .filter(|(_, w)| w.serves(agent))
            .map(|(url, w)| (w.clone(), url.clone()))
            .collect();
        if serving.len() > 1 {
            let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % serving.len();
            serving.rotate_left(start);
            serving.sort_by_key(|(w, _)| w.in_flight.load(Ordering::Relaxed));
        }
        serving
    }

    /// Starts `request` on a worker that serves its agent, with the current
    /// trace context and `request_id` in its metadata. A worker that is
    /// full (`RESOURCE_EXHAUSTED`) or unreachable is skipped for the next one.
    pub async fn run(
        &self,
        request: agent::RunRequest,
        timeout: Duration,
        request_id: Option<&str>,
    ) -> Result<RunStream, tonic::Status> {
        let request_id = request_id.and_then(|id| tonic::metadata::AsciiMetadataValue::try_from(id).ok());
        let mut candidates = self.candidates(&request.agent);
        if candidates.is_empty() {
            // A worker may have joined since the last refresh.
            self.refresh().await;
            candidates = self.candidates(&request.agent);
        }
        if candidates.is_empty() {
            return Err(tonic::Status::unavailable(format!(
                "no agent-worker serves agent `{}`",
                request.agent
            )));
        }
        let mut last = None;
        for (worker, url) in candidates {
            worker.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(worker.in_flight.clone());
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(timeout);
            chat_common::trace::inject_metadata(call.metadata_mut());
            if let Some(id) = &request_id {
                call.metadata_mut()
                    .insert(chat_common::trace::REQUEST_ID, id.clone());
            }
            match worker.client.clone().run(call).await {
                Ok(response) => {
                    return Ok(RunStream {
                        events: response.into_inner(),
                        _in_flight: guard,
                    });
                }
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                    ) =>
                {
                    debug!(worker = %url, code = ?status.code(), "agent-worker declined the run; trying the next");
                    last = Some(status);
                }
                Err(status) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no agent-worker accepted the run")))
    }

    /// The agents the fleet serves: the union of every worker's, by name.
    pub async fn list_agents(&self) -> Result<Vec<agent::AgentInfo>, tonic::Status> {
        if !self.knows_any() {
            self.refresh().await;
        }
        let workers = self.inner.workers.read().unwrap_or_else(|e| e.into_inner());
        let mut union = BTreeMap::new();
        let mut answered = false;
        for agents in workers.values().filter_map(|w| w.agents.as_ref()) {
            answered = true;
            for agent in agents {
                union.entry(agent.name.clone()).or_insert_with(|| agent.clone());
            }
        }
        if !answered {
            return Err(tonic::Status::unavailable("no agent-worker is reachable"));
        }
        Ok(union.into_values().collect())
    }

    fn knows_any(&self) -> bool {
        let workers = self.inner.workers.read().unwrap_or_else(|e| e.into_inner());
        workers.values().any(|w| w.agents.is_some())
    }
}
