//! Endpoint discovery for gRPC clients of a replicated service.
//!
//! A URL may name an IP address or a DNS name; a name stands for every
//! address it resolves to (a Kubernetes headless service's pods, a compose
//! service's replicas) and is resolved again every `every`, so replicas join
//! and leave as they come and go. A name that fails to resolve keeps its last
//! addresses, so a DNS hiccup never empties the set.
//!
//! [`watch`] publishes the current endpoint set; [`balanced_channel`] turns
//! it into one tonic channel that spreads calls (and new streams) across the
//! set, leaving established streams where they are.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

/// The endpoint URLs (`scheme://ip:port`) a set of configured URLs stands for.
pub type Endpoints = BTreeSet<String>;

/// A configured URL taken apart: scheme, host (name or IP) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid url `{url}`: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let host = uri.host().ok_or_else(|| format!("url `{url}` has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Self { scheme, host, port })
    }

    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

fn endpoint_url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}")
}

/// The endpoints `targets` stand for now; a name that fails to resolve
/// keeps its addresses from `previous`.
async fn resolve_all<R, F>(targets: &[Target], previous: &Endpoints, resolve: &R) -> Endpoints
where
    R: Fn(String, u16) -> F,
    F: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let mut urls = BTreeSet::new();
    for target in targets {
        if let Some(ip) = target.ip() {
            urls.insert(endpoint_url(&target.scheme, SocketAddr::new(ip, target.port)));
            continue;
        }
        match resolve(target.host.clone(), target.port).await {
            Ok(addrs) if !addrs.is_empty() => {
                urls.extend(addrs.into_iter().map(|addr| endpoint_url(&target.scheme, addr)));
            }
            Ok(_) | Err(_) => {
                warn!(host = %target.host, "name did not resolve; keeping its last addresses");
                let prefix = format!("{}://", target.scheme);
                let port = format!(":{}", target.port);
                urls.extend(
                    previous
                        .iter()
                        .filter(|u| u.starts_with(&prefix) && u.ends_with(&port))
                        .cloned(),
                );
            }
        }
    }
    urls
}

async fn lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(Iterator::collect)
}

/// Resolves `urls` now, then again every `every` while anyone watches.
pub async fn watch(urls: &[String], every: Duration) -> Result<watch::Receiver<Endpoints>, String> {
    let targets = urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err("no endpoint configured".to_owned());
    }
    let first = resolve_all(&targets, &Endpoints::new(), &lookup).await;
    let (tx, rx) = watch::channel(first);
    if targets.iter().all(|t| t.ip().is_some()) {
        // Fixed addresses: nothing to follow; keep the sender while watched.
        tokio::spawn(async move { tx.closed().await });
        return Ok(rx);
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = tx.closed() => return,
            }
            let previous = tx.borrow().clone();
            let next = resolve_all(&targets, &previous, &lookup).await;
            if next != previous {
                debug!(endpoints = next.len(), "endpoint addresses changed");
                tx.send_replace(next);
            }
        }
    });
    Ok(rx)
}

/// Sends the changes that turn `current` into `desired`; false once the
/// channel is gone.
async fn apply<F>(
    current: &mut Endpoints,
    desired: &Endpoints,
    changes: &mpsc::Sender<Change<String, Endpoint>>,
    endpoint: &F,
) -> bool
where
    F: Fn(&str) -> Result<Endpoint, tonic::transport::Error>,
{
    for gone in current.difference(desired) {
        info!(endpoint = %gone, "endpoint left the balance");
        if changes.send(Change::Remove(gone.clone())).await.is_err() {
            return false;
        }
    }
    for new in desired.difference(current) {
        match endpoint(new) {
            Ok(endpoint) => {
                info!(endpoint = %new, "endpoint joined the balance");
                if changes.send(Change::Insert(new.clone(), endpoint)).await.is_err() {
                    return false;
                }
            }
            Err(error) => warn!(endpoint = %new, %error, "invalid endpoint"),
        }
    }
    current.clone_from(desired);
    true
}

/// One channel balanced across `endpoints` as they change; `endpoint`
/// configures each connection (timeouts, windows, keep-alive).
pub fn balanced_channel<F>(mut endpoints: watch::Receiver<Endpoints>, endpoint: F) -> Channel
where
    F: Fn(&str) -> Result<Endpoint, tonic::transport::Error> + Send + Sync + 'static,
{
    let (channel, changes) = Channel::balance_channel::<String>(64);
    tokio::spawn(async move {
        let mut current = Endpoints::new();
        loop {
            let desired = endpoints.borrow_and_update().clone();
            if !apply(&mut current, &desired, &changes, &endpoint).await {
                return;
            }
            if endpoints.changed().await.is_err() {
                // No more changes: keep the balance as it is while it is used.
                changes.closed().await;
                return;
            }
        }
    });
    channel
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn urls_are_taken_apart() {
        let target = Target::parse("http://workers.chat.svc:50052").expect("valid");
        assert_eq!((target.host.as_str(), target.port), ("workers.chat.svc", 50052));
        assert_eq!(Target::parse("http://[::1]:7").expect("valid").host, "::1");
        assert!(Target::parse("not a url").is_err());
    }

    #[tokio::test]
    async fn names_are_resolved_again_and_the_balance_follows() {
        let answers = Arc::new(Mutex::new(vec![
            Ok(vec![addr("10.0.0.1:50052"), addr("10.0.0.2:50052")]),
            Err(io::Error::other("dns down")),
            Ok(vec![addr("10.0.0.2:50052"), addr("10.0.0.3:50052")]),
        ]));
        let resolve = |_host: String, _port: u16| {
            let answer = answers.lock().expect("lock").remove(0);
            async move { answer }
        };
        let targets = vec![
            Target::parse("http://workers:50052").expect("valid"),
            Target::parse("http://10.9.9.9:1").expect("valid"),
        ];
        let (tx, mut rx) = mpsc::channel(16);
        let endpoint = |url: &str| Endpoint::from_shared(url.to_owned());
        let mut current = Endpoints::new();

        let first = resolve_all(&targets, &current, &resolve).await;
        assert!(apply(&mut current, &first, &tx, &endpoint).await);
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
        let same = resolve_all(&targets, &current, &resolve).await;
        assert_eq!(same, current);

        // A pod left, another joined.
        let next = resolve_all(&targets, &current, &resolve).await;
        assert!(apply(&mut current, &next, &tx, &endpoint).await);
        let changes: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| match c {
                Change::Insert(key, _) => format!("+{key}"),
                Change::Remove(key) => format!("-{key}"),
            })
            .collect();
        assert_eq!(changes, ["-http://10.0.0.1:50052", "+http://10.0.0.3:50052"]);
    }

    #[tokio::test]
    async fn a_balanced_channel_spreads_calls_over_every_replica() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let mut hits = Vec::new();
        let mut urls = Endpoints::new();
        for _ in 0..2 {
            let (reporter, service) = tonic_health::server::health_reporter();
            reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            urls.insert(format!("http://{}", listener.local_addr().expect("addr")));
            let count = Arc::new(AtomicUsize::new(0));
            hits.push(count.clone());
            let counting = tower::ServiceBuilder::new().map_request(move |request: http::Request<_>| {
                count.fetch_add(1, Ordering::SeqCst);
                request
            });
            tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(counting)
                    .add_service(service)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            drop(reporter);
        }
        let (_keep, rx) = watch::channel(urls);
        let channel = balanced_channel(rx, |url| Endpoint::from_shared(url.to_owned()));
        let mut client = HealthClient::new(channel);
        for _ in 0..40 {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("served");
        }
        let counts: Vec<usize> = hits.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(counts.iter().sum::<usize>(), 40);
        assert!(
            counts.iter().all(|&n| n > 0),
            "every replica served some calls: {counts:?}"
        );
    }
}
