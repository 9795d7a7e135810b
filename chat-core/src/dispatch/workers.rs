//! The agent-worker fleet as one balanced gRPC client.

use std::time::Duration;

use chat_proto::agent::v1::{self as agent, agent_worker_client::AgentWorkerClient};
use tonic::transport::{Channel, Endpoint};

/// Client for every configured agent-worker, balanced per call.
#[derive(Clone, Debug)]
pub struct WorkerPool {
    client: AgentWorkerClient<Channel>,
}

impl WorkerPool {
    /// Builds a lazily connected, balanced client over `urls`.
    pub fn new(urls: &[String]) -> Result<Self, tonic::transport::Error> {
        let endpoints = urls
            .iter()
            .map(|url| {
                Ok(Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(20))
                    .keep_alive_while_idle(true))
            })
            .collect::<Result<Vec<_>, tonic::transport::Error>>()?;
        let channel = if endpoints.len() == 1 {
            endpoints
                .into_iter()
                .next()
                .map(|e| e.connect_lazy())
                .unwrap_or_else(|| Channel::balance_list(std::iter::empty()))
        } else {
            Channel::balance_list(endpoints.into_iter())
        };
        let client = AgentWorkerClient::new(channel)
            .max_decoding_message_size(chat_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(chat_proto::MAX_MESSAGE_BYTES);
        Ok(Self { client })
    }

    pub async fn run(
        &self,
        request: agent::RunRequest,
        timeout: Duration,
    ) -> Result<tonic::Streaming<agent::RunEvent>, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        Ok(self.client.clone().run(request).await?.into_inner())
    }

    pub async fn list_agents(&self) -> Result<Vec<agent::AgentInfo>, tonic::Status> {
        let mut request = tonic::Request::new(agent::ListAgentsRequest {});
        request.set_timeout(Duration::from_secs(5));
        Ok(self
            .client
            .clone()
            .list_agents(request)
            .await?
            .into_inner()
            .agents)
    }
}
