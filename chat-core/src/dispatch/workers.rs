//! The agent-worker fleet as one balanced gRPC client. Worker URLs may name
//! IP addresses or DNS names; names are resolved again every
//! `resolve_every`, so a Kubernetes headless service's pods join and leave
//! the pool as they come and go.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::agent::v1::{self as agent, agent_worker_client::AgentWorkerClient};
use tokio::sync::mpsc::Sender;
use tonic::transport::{Channel, Endpoint, channel::Change};
use tracing::{debug, info, warn};

/// How long a fetched agent list is reused before the fleet is asked again.
const AGENTS_TTL: Duration = Duration::from_secs(5);

type AgentsCache = std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, Vec<agent::AgentInfo>)>>>;

/// Client for every configured agent-worker, balanced per call.
#[derive(Clone, Debug)]
pub struct WorkerPool {
    client: AgentWorkerClient<Channel>,
    /// The fleet's agents, fetched at most every [`AGENTS_TTL`]: session
    /// creation and handoffs consult them, and they rarely change.
    agents: AgentsCache,
}

/// A worker URL taken apart: scheme, host (name or IP) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

fn parse_target(url: &str) -> Result<Target, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid agent-worker url `{url}`: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("http").to_owned();
    let host = uri
        .host()
        .ok_or_else(|| format!("agent-worker url `{url}` has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(Target { scheme, host, port })
}

fn endpoint_url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}")
}

/// The endpoint URLs the targets stand for now. A name that fails to
/// resolve keeps its previous addresses (from `previous`), so a DNS hiccup
/// never empties the pool.
async fn desired<R, F>(targets: &[Target], previous: &BTreeSet<String>, resolve: &R) -> BTreeSet<String>
where
    R: Fn(String, u16) -> F,
    F: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let mut urls = BTreeSet::new();
    for target in targets {
        if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
            urls.insert(endpoint_url(&target.scheme, SocketAddr::new(ip, target.port)));
            continue;
        }
        match resolve(target.host.clone(), target.port).await {
            Ok(addrs) if !addrs.is_empty() => {
                urls.extend(addrs.into_iter().map(|addr| endpoint_url(&target.scheme, addr)));
            }
            Ok(_) | Err(_) => {
                warn!(host = %target.host, "agent-worker name did not resolve; keeping its last addresses");
                let prefix = format!("{}://", target.scheme);
                urls.extend(previous.iter().filter(|u| u.starts_with(&prefix)).cloned());
            }
        }
    }
    urls
}

fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

/// Applies the difference between the current and desired endpoints.
async fn apply(
    current: &mut BTreeSet<String>,
    desired: BTreeSet<String>,
    changes: &Sender<Change<String, Endpoint>>,
) -> bool {
    for gone in current.difference(&desired) {
        info!(worker = %gone, "agent-worker left the pool");
        if changes.send(Change::Remove(gone.clone())).await.is_err() {
            return false;
        }
    }
    for new in desired.difference(current) {
        match endpoint(new) {
            Ok(endpoint) => {
                info!(worker = %new, "agent-worker joined the pool");
                if changes.send(Change::Insert(new.clone(), endpoint)).await.is_err() {
                    return false;
                }
            }
            Err(error) => warn!(worker = %new, %error, "invalid agent-worker endpoint"),
        }
    }
    *current = desired;
    true
}

impl WorkerPool {
    /// Builds the balanced client over `urls`, resolving names now and then
    /// every `resolve_every`.
    pub async fn new(urls: &[String], resolve_every: Duration) -> Result<Self, String> {
        let targets = urls
            .iter()
            .map(|u| parse_target(u))
            .collect::<Result<Vec<_>, _>>()?;
        let (channel, changes) = Channel::balance_channel::<String>(64);
        let resolve = |host: String, port: u16| async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|addrs| addrs.collect::<Vec<_>>())
        };
        let mut current = BTreeSet::new();
        let first = desired(&targets, &current, &resolve).await;
        apply(&mut current, first, &changes).await;
        let has_names = targets
            .iter()
            .any(|t| t.host.parse::<std::net::IpAddr>().is_err());
        if has_names {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(resolve_every).await;
                    let next = desired(&targets, &current, &resolve).await;
                    if next != current {
                        debug!(workers = next.len(), "agent-worker addresses changed");
                    }
                    if !apply(&mut current, next, &changes).await {
                        return;
                    }
                }
            });
        } else {
            // Static addresses: keep the sender alive so the pool stays as it is.
            tokio::spawn(async move {
                changes.closed().await;
            });
        }
        let client = AgentWorkerClient::new(channel)
            .max_decoding_message_size(chat_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(chat_proto::MAX_MESSAGE_BYTES);
        Ok(Self {
            client,
            agents: AgentsCache::default(),
        })
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

    /// The agents the fleet serves (cached for a few seconds).
    pub async fn list_agents(&self) -> Result<Vec<agent::AgentInfo>, tonic::Status> {
        if let Some((at, agents)) = self.agents.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < AGENTS_TTL
        {
            return Ok(agents.clone());
        }
        let mut request = tonic::Request::new(agent::ListAgentsRequest {});
        request.set_timeout(Duration::from_secs(5));
        let agents = self
            .client
            .clone()
            .list_agents(request)
            .await?
            .into_inner()
            .agents;
        *self.agents.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), agents.clone()));
        Ok(agents)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn urls_are_taken_apart() {
        let target = parse_target("http://workers.chat.svc:50052").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("workers.chat.svc", 50052));
        assert_eq!(parse_target("http://[::1]:7").unwrap().host, "::1");
        assert!(parse_target("not a url").is_err());
    }

    #[tokio::test]
    async fn names_are_resolved_again_and_the_pool_follows() {
        let answers = Arc::new(Mutex::new(vec![
            Ok(vec![addr("10.0.0.1:50052"), addr("10.0.0.2:50052")]),
            Err(io::Error::other("dns down")),
            Ok(vec![addr("10.0.0.2:50052"), addr("10.0.0.3:50052")]),
        ]));
        let resolve = |_host: String, _port: u16| {
            let answer = answers.lock().unwrap().remove(0);
            async move { answer }
        };
        let targets = vec![
            parse_target("http://workers:50052").unwrap(),
            parse_target("http://10.9.9.9:1").unwrap(),
        ];
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut current = BTreeSet::new();

        let first = desired(&targets, &current, &resolve).await;
        assert!(apply(&mut current, first, &tx).await);
        let inserted: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| match c {
                Change::Insert(key, _) => key,
                Change::Remove(key) => panic!("unexpected removal of {key}"),
            })
            .collect();
        assert_eq!(
            inserted,
            [
                "http://10.0.0.1:50052",
                "http://10.0.0.2:50052",
                "http://10.9.9.9:1"
            ]
        );

        // DNS fails: nothing changes.
        let same = desired(&targets, &current, &resolve).await;
        assert_eq!(same, current);

        // A pod left, another joined.
        let next = desired(&targets, &current, &resolve).await;
        assert!(apply(&mut current, next, &tx).await);
        let changes: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| match c {
                Change::Insert(key, _) => format!("+{key}"),
                Change::Remove(key) => format!("-{key}"),
            })
            .collect();
        assert_eq!(changes, ["-http://10.0.0.1:50052", "+http://10.0.0.3:50052"]);
    }
}
