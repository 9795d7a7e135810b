//! The gateway's WebSocket (`/api/v1/ws`): connecting from a chosen source address with the
//! `chat.v1` and `bearer.<token>` subprotocols, and the JSON frames a run reads and writes.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

pub type Socket = WebSocketStream<TcpStream>;

/// Where WebSockets go: one gateway's `/api/v1/ws`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    url: String,
}

impl Endpoint {
    /// The WebSocket endpoint of the gateway at `base` (`http://host:port`).
    pub fn of_gateway(base: &Url) -> anyhow::Result<Self> {
        let host = base
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("gateway URL {base} has no host"))?;
        let port = base
            .port_or_known_default()
            .ok_or_else(|| anyhow::anyhow!("gateway URL {base} has no port"))?;
        if base.scheme() != "http" {
            anyhow::bail!("gateway URL {base}: only http:// is supported (loopback benchmarks)");
        }
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("gateway host {host} has no address"))?;
        Ok(Self {
            addr,
            url: format!("ws://{host}:{port}/api/v1/ws"),
        })
    }
}

/// Source addresses to spread client sockets over: 127.0.0.2, 127.0.0.3, ... (each has its own
/// range of ephemeral ports). Empty for a gateway that is not on loopback: the kernel picks.
pub fn source_addrs(endpoint: &Endpoint, count: u8) -> Vec<IpAddr> {
    if !endpoint.addr.ip().is_loopback() || !endpoint.addr.is_ipv4() {
        return Vec::new();
    }
    (0..count.min(250))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
        .collect()
}

/// Why a WebSocket could not be opened, as an error kind for the report.
#[derive(Debug)]
pub enum ConnectError {
    Tcp(std::io::Error),
    /// The upgrade was answered with this HTTP status instead of 101.
    Status(u16),
    Handshake(tungstenite::Error),
    Timeout,
    /// The access token cannot travel in a header.
    BadToken,
}

impl ConnectError {
    pub fn kind(&self) -> String {
        match self {
            Self::Tcp(err) => format!("connect:{:?}", err.kind()),
            Self::Status(status) => format!("upgrade_{status}"),
            Self::Handshake(_) => "upgrade_failed".into(),
            Self::Timeout => "timeout:upgrade".into(),
            Self::BadToken => "bad_token".into(),
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(err) => write!(f, "TCP connect failed: {err}"),
            Self::Status(status) => write!(f, "upgrade answered {status}"),
            Self::Handshake(err) => write!(f, "WebSocket handshake failed: {err}"),
            Self::Timeout => f.write_str("upgrade timed out"),
            Self::BadToken => f.write_str("the access token is not a valid header value"),
        }
    }
}

/// Opens an authenticated WebSocket from `source` (any address when `None`).
pub async fn connect(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    token: &str,
    timeout: Duration,
) -> Result<Socket, ConnectError> {
    tokio::time::timeout(timeout, connect_inner(endpoint, source, token))
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

async fn connect_inner(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    token: &str,
) -> Result<Socket, ConnectError> {
    let socket = if endpoint.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::Tcp)?;
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(ConnectError::Tcp)?;
    }
    let stream = socket.connect(endpoint.addr).await.map_err(ConnectError::Tcp)?;
    stream.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let mut request = endpoint
        .url
        .as_str()
        .into_client_request()
        .map_err(ConnectError::Handshake)?;
    let protocols = format!("chat.v1, bearer.{token}")
        .parse()
        .map_err(|_| ConnectError::BadToken)?;
    request.headers_mut().insert("sec-websocket-protocol", protocols);
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(ConnectError::Status(response.status().as_u16())),
        Err(err) => Err(ConnectError::Handshake(err)),
    }
}

// === frames ===

/// A server frame, with the fields a run looks at; every other type is [`Frame::Other`].
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame<'a> {
    Subscribed {
        #[serde(borrow)]
        session_id: Cow<'a, str>,
    },
    Ack {
        #[serde(borrow)]
        client_msg_id: Cow<'a, str>,
        #[serde(borrow)]
        run_id: Cow<'a, str>,
    },
    Delta {
        #[serde(borrow)]
        run_id: Cow<'a, str>,
        index: u32,
        #[serde(borrow)]
        text: Cow<'a, str>,
        #[serde(default)]
        attempt: u32,
    },
    Message {
        message: StoredMessage,
    },
    Run {
        #[serde(borrow)]
        run_id: Cow<'a, str>,
        #[serde(borrow)]
        status: Cow<'a, str>,
        #[serde(default)]
        error: Option<String>,
    },
    Error {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        client_msg_id: Option<String>,
    },
    #[serde(other)]
    Other,
}

/// The stored message of a `message` frame.
#[derive(Debug, Deserialize)]
pub struct StoredMessage {
    pub role: String,
    pub content: String,
    #[serde(default)]
    pub run_id: Option<String>,
}

/// What came off a socket.
#[derive(Debug)]
pub enum Incoming {
    Text(tungstenite::Utf8Bytes),
    /// The server closed the socket (with its close code, when it gave one).
    Closed(Option<u16>),
}

/// The next text frame, skipping pings and binary frames; `None` when `timeout` passed first.
pub async fn next_text(socket: &mut Socket, timeout: Duration) -> Option<Incoming> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next()).await.ok()?;
        return Some(match message {
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Close(frame))) => Incoming::Closed(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => Incoming::Closed(None),
        });
    }
}

pub async fn send_json(socket: &mut Socket, frame: serde_json::Value) -> Result<(), tungstenite::Error> {
    socket.send(Message::text(frame.to_string())).await
}

/// Subscribes `socket` to `session_id` (from `after_seq` 0) and waits for `subscribed`;
/// the error kind otherwise.
pub async fn subscribe(socket: &mut Socket, session_id: &str, timeout: Duration) -> Result<(), String> {
    send_json(
        socket,
        json!({"type": "subscribe", "session_id": session_id, "after_seq": 0}),
    )
    .await
    .map_err(|_| "send_failed".to_owned())?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_text(socket, left).await {
            None => return Err("timeout:subscribed".into()),
            Some(Incoming::Closed(code)) => return Err(closed_kind(code)),
            Some(Incoming::Text(text)) => match serde_json::from_str::<Frame>(&text) {
                Ok(Frame::Subscribed { session_id: s }) if s == session_id => return Ok(()),
                Ok(Frame::Error { code, .. }) => return Err(format!("error_frame:{code}")),
                Ok(_) => {}
                Err(_) => return Err("bad_frame".into()),
            },
        }
    }
}

/// The error kind of a socket the server closed.
/// Whether an error kind means the socket is gone: its session's driver stops
/// (once counted) instead of failing every further turn at once.
pub fn ends_socket(kind: &str) -> bool {
    kind.starts_with("closed") || kind == "send_failed"
}

pub fn closed_kind(code: Option<u16>) -> String {
    match code {
        Some(code) => format!("closed:{code}"),
        None => "closed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_by_type() {
        let delta: Frame = serde_json::from_str(
            r#"{"type":"delta","session_id":"s","run_id":"r","index":3,"text":"hi\n","attempt":1}"#,
        )
        .expect("delta");
        assert!(matches!(delta, Frame::Delta { index: 3, ref text, attempt: 1, .. } if text == "hi\n"));
        let other: Frame = serde_json::from_str(r#"{"type":"presence","name":"x"}"#).expect("other");
        assert!(matches!(other, Frame::Other));
        let reply: Frame = serde_json::from_str(
            r#"{"type":"message","session_id":"s","message":{"role":"assistant","content":"a b","run_id":"r","seq":2}}"#,
        )
        .expect("message");
        assert!(matches!(reply, Frame::Message { message } if message.run_id.as_deref() == Some("r")));
    }

    #[test]
    fn loopback_gateways_get_spread_sources() {
        let endpoint =
            Endpoint::of_gateway(&"http://127.0.0.1:3006".parse().expect("url")).expect("endpoint");
        let sources = source_addrs(&endpoint, 3);
        assert_eq!(sources.len(), 3);
        assert_eq!(sources[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        assert!(Endpoint::of_gateway(&"https://127.0.0.1".parse().expect("url")).is_err());
    }
}
