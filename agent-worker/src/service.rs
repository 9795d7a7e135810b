//! The gRPC face of the worker: `agent.v1.AgentWorker` over the agent registry.

use std::sync::Arc;

use chat_common::ErrorCode;
use chat_proto::agent::v1::agent_worker_server::AgentWorker;
use chat_proto::agent::v1::{ListAgentsRequest, ListAgentsResponse, RunEvent, RunRequest};
use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::agents::Registry;

/// Events buffered between a run's producer and its gRPC stream.
const EVENT_BUFFER: usize = 32;

/// Serves runs and agent listings from a registry, with a cap on concurrent runs.
#[derive(Clone, Debug)]
pub struct AgentWorkerService {
    registry: Arc<Registry>,
    run_slots: Arc<Semaphore>,
    max_concurrent_runs: usize,
}

/// How the forwarding of a run's events ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// Every event reached the stream.
    Completed,
    /// The client went away (its stream was dropped) before the run ended.
    ClientGone,
}

// === impl AgentWorkerService ===

impl AgentWorkerService {
    /// Serves `registry`, running at most `max_concurrent_runs` runs at once.
    pub fn new(registry: Registry, max_concurrent_runs: usize) -> Self {
        Self {
            registry: Arc::new(registry),
            run_slots: Arc::new(Semaphore::new(max_concurrent_runs)),
            max_concurrent_runs,
        }
    }
}

#[tonic::async_trait]
impl AgentWorker for AgentWorkerService {
    type RunStream = ReceiverStream<Result<RunEvent, Status>>;

    async fn run(&self, request: Request<RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let slot = Arc::clone(&self.run_slots).try_acquire_owned().map_err(|_| {
            let limit = self.max_concurrent_runs;
            ErrorCode::RateLimited.status(format!("worker is already running its limit of {limit} runs"))
        })?;
        let request_id = request
            .extensions()
            .get::<chat_common::trace::RequestId>()
            .map(|id| id.0.clone());
        let request = request.into_inner();
        // The agent runs in this span (a child of the call's, so of
        // chat-core's run): its HTTP calls carry it onward.
        let span = tracing::info_span!(
            "run",
            otel.name = %format_args!("agent {}", request.agent),
            run_id = %request.run_id,
            session_id = %request.session_id,
            agent = %request.agent,
            attempt = request.attempt,
            request_id = request_id.as_deref().unwrap_or_default(),
        );
        span.in_scope(|| tracing::info!("run started"));
        let started = std::time::Instant::now();
        // Only names the worker serves become label values, so a caller cannot grow the series.
        let known = self.registry.get(&request.agent).is_some();
        let agent = if known {
            request.agent.clone()
        } else {
            "unknown".to_owned()
        };
        let events = self.registry.run(request);
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let in_flight = metrics::gauge!("chat_runs_in_flight");
        in_flight.increment(1.0);
        tokio::spawn(
            async move {
                let outcome = forward(events, &tx).await;
                let duration_ms = chat_common::trace::millis(started.elapsed());
                tracing::info!(?outcome, duration_ms, "run ended");
                in_flight.decrement(1.0);
                let status = match outcome {
                    Forwarded::Completed => "completed",
                    Forwarded::ClientGone => "cancelled",
                };
                metrics::counter!("chat_runs_total", "agent" => agent, "status" => status).increment(1);
                drop(slot);
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_agents(
        &self,
        _request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let agents = self.registry.infos().to_vec();
        Ok(Response::new(ListAgentsResponse { agents }))
    }
}

/// Sends each event of a run into `tx`, stopping as soon as the receiving side is dropped.
pub async fn forward(
    events: impl Stream<Item = RunEvent>,
    tx: &mpsc::Sender<Result<RunEvent, Status>>,
) -> Forwarded {
    let mut events = std::pin::pin!(events);
    loop {
        let next = tokio::select! {
            biased;
            () = tx.closed() => return Forwarded::ClientGone,
            next = events.next() => next,
        };
        let Some(event) = next else {
            return Forwarded::Completed;
        };
        if tx.send(Ok(event)).await.is_err() {
            return Forwarded::ClientGone;
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_proto::agent::v1::HistoryMessage;
    use futures::stream;

    use super::*;
    use crate::agents::events;
    use crate::config::AgentsConfig;

    fn service(max_concurrent_runs: usize) -> AgentWorkerService {
        let registry =
            Registry::new(AgentsConfig::load(None).expect("built-in config")).expect("agents build");
        AgentWorkerService::new(registry, max_concurrent_runs)
    }

    fn echo_request(text: String) -> Request<RunRequest> {
        Request::new(RunRequest {
            agent: "echo".into(),
            history: vec![HistoryMessage {
                role: "user".into(),
                content: text,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn forwarding_stops_when_the_receiver_is_dropped() {
        let (tx, rx) = mpsc::channel(1);
        let endless = stream::repeat_with(|| events::delta("again"));
        let producer = tokio::spawn(async move { forward(endless, &tx).await });

        drop(rx);

        assert_eq!(producer.await.expect("producer task"), Forwarded::ClientGone);
    }

    #[tokio::test]
    async fn forwarding_stops_while_the_agent_is_still_thinking() {
        let (tx, rx) = mpsc::channel(1);
        let producer = tokio::spawn(async move { forward(stream::pending(), &tx).await });

        drop(rx);

        assert_eq!(producer.await.expect("producer task"), Forwarded::ClientGone);
    }

    #[tokio::test]
    async fn forwarding_delivers_every_event_in_order() {
        let (tx, rx) = mpsc::channel(1);
        let producer = tokio::spawn(async move { forward(events::reply("one two three".into()), &tx).await });

        let received: Vec<RunEvent> = ReceiverStream::new(rx)
            .map(|event| event.expect("ok"))
            .collect()
            .await;

        assert_eq!(producer.await.expect("producer task"), Forwarded::Completed);
        let expected: Vec<RunEvent> = events::reply("one two three".into()).collect().await;
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn runs_beyond_the_limit_are_refused_with_resource_exhausted() {
        let service = service(1);
        // More deltas than the buffer holds: the unread first run stays in flight.
        let long_text = "word ".repeat(EVENT_BUFFER * 4);
        let _in_flight = service
            .run(echo_request(long_text))
            .await
            .expect("first run starts");

        let refused = service
            .run(echo_request("hello".into()))
            .await
            .expect_err("second run is refused");

        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn a_dropped_run_frees_its_slot() {
        let service = service(1);
        let in_flight = service
            .run(echo_request("word ".repeat(EVENT_BUFFER * 4)))
            .await
            .expect("run starts");

        drop(in_flight);
        // Resolves once the producing task has noticed the dropped stream and ended.
        drop(service.run_slots.acquire().await.expect("semaphore open"));

        service
            .run(echo_request("hello".into()))
            .await
            .expect("slot is free again");
    }
}
