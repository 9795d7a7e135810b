//! Wiring: shared state, the router with its middleware, and the server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chat_common::{ErrorCode, Health};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{AuthUser, Tokens};
use crate::connections::Connections;
use crate::core::{CoreClient, authorized, on_behalf_of};
use crate::error::ApiError;
use crate::grpc_web::{self, GrpcWebProxy};
use crate::idle::IdleAcceptor;
use crate::idp::{External, ExternalUsers, Providers};
use crate::origin::AllowedOrigins;
use crate::ratelimit::{self, MemoryStore, RateLimitStore, RateLimits, RedisStore};
use crate::routes::handoff::{OperatorRoute, OwnerRoute};
use crate::routes::{agents, auth, handoff, health, messages, operators, page, sessions};
use crate::settings::Settings;
use crate::{legacy, ws};
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Content-Security-Policy of every response: the page loads only its own script and style.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Size limits applied to client input.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_content_bytes: usize,
    pub max_body_bytes: usize,
    pub max_ws_frame_bytes: usize,
    pub ws_read_buffer_bytes: usize,
    pub ws_write_buffer_bytes: usize,
    /// How long a socket whose token expired stays open for a fresh one.
    pub ws_token_grace: std::time::Duration,
    pub ws_flush_timeout: std::time::Duration,
    /// How long a socket may stay open before it is closed with 1001, if limited.
    pub ws_max_age: Option<std::time::Duration>,
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub core: CoreClient,
    pub tokens: Arc<Tokens>,
    /// External identity providers, when configured.
    pub external: Option<External>,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    /// Client IPs come from `X-Forwarded-For` (see `--trust-forwarded-for`).
    pub trust_forwarded_for: bool,
    /// The gateway terminates TLS itself.
    pub serves_tls: bool,
    pub allowed_origins: AllowedOrigins,
    /// Readiness, as `/readyz` reports it.
    pub health: Health,
    /// Cancelled when the gateway starts draining: open WebSockets close with
    /// 1012, SSE and gRPC-Web streams end.
    pub shutdown: CancellationToken,
    /// Long-lived connections per user and client address, capped.
    pub connections: Arc<Connections>,
    /// The `Multiplex` streams WebSockets share to chat-core.
    pub mux: crate::mux::Multiplexer,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// A unary chat-core request on behalf of `user`, with the request deadline.
    pub fn unary_as<T>(&self, message: T, user: &AuthUser) -> Result<tonic::Request<T>, ApiError> {
        let mut request = self.stream_as(message, user)?;
        request.set_timeout(self.core.unary_timeout());
        Ok(request)
    }

    /// Asks chat-core whether `user`'s sign-in still holds: the check of a
    /// token on paths that would not otherwise reach chat-core (a signed-out
    /// sign-in fails with [`ErrorCode::Unauthenticated`]).
    pub async fn check_signed_in(&self, user: &AuthUser) -> Result<(), ApiError> {
        let request = self.unary_as(chat_proto::chat::v1::WhoAmIRequest {}, user)?;
        self.core.operators().who_am_i(request).await?;
        Ok(())
    }

    /// A chat-core request on behalf of `user`, without a deadline (a stream):
    /// the gateway's service token, naming the user it verified.
    pub fn stream_as<T>(&self, message: T, user: &AuthUser) -> Result<tonic::Request<T>, ApiError> {
        let mut request = authorized(message, &self.tokens.service_token()?)?;
        on_behalf_of(&mut request, user)?;
        Ok(request)
    }
}

/// The gateway server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    core: CoreClient,
    health: Health,
    shutdown: CancellationToken,
    shutdown_timeout: std::time::Duration,
    /// Certificate and key when the gateway terminates TLS itself.
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    timeouts: ConnectionTimeouts,
    /// Open WebSockets and streams, which a draining gateway waits for.
    connections: Arc<Connections>,
}

/// How long a client connection may take to send a request's header, and
/// sit idle.
#[derive(Clone, Copy, Debug)]
struct ConnectionTimeouts {
    header_read: std::time::Duration,
    idle: std::time::Duration,
}

impl Application {
    /// Validates settings, builds the chat-core clients and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, None).await
    }

    /// [`Application::build`], calling the chat-core of this process
    /// directly through `core` instead of `CHAT_CORE_URL` (the all-in-one).
    pub async fn build_with_core(
        settings: Settings,
        core: chat_common::inproc::Connector,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, Some(core)).await
    }

    async fn build_with(
        mut settings: Settings,
        core: Option<chat_common::inproc::Connector>,
    ) -> anyhow::Result<Self> {
        settings.load_secret_files().map_err(anyhow::Error::msg)?;
        settings.validate().map_err(anyhow::Error::msg)?;
        let core = match core {
            Some(core) => CoreClient::in_process(&core, settings.request_timeout()),
            None => {
                let core_tls = settings
                    .chat_core_tls()
                    .and_then(|files| files.map(|f| f.config(&settings.chat_core_url)).transpose())
                    .map_err(anyhow::Error::msg)?;
                CoreClient::new(
                    &settings.chat_core_url,
                    std::time::Duration::from_secs(settings.chat_core_resolve_secs),
                    settings.request_timeout(),
                    core_tls,
                )
                .await?
            }
        };
        let health = Health::new("gateway");
        health.set("chat-core", false);
        let tokens = Arc::new(
            Tokens::new(
                settings.jwt_secret().as_bytes(),
                settings.access_token_ttl(),
                settings.refresh_token_ttl(),
            )
            .with_refresh_family_ttl(std::time::Duration::from_secs(settings.refresh_family_ttl_secs)),
        );
        let providers = settings
            .identity_providers()
            .map_err(|message| anyhow::anyhow!(message))?;
        let external = if providers.is_empty() {
            None
        } else {
            let min_refresh = std::time::Duration::from_secs(settings.jwks_min_refresh_secs);
            Some(External {
                providers: Providers::new(providers, min_refresh)
                    .map_err(|message| anyhow::anyhow!(message))?,
                users: ExternalUsers::new(std::time::Duration::from_secs(settings.external_user_cache_secs)),
            })
        };
        let limits = Limits {
            max_content_bytes: settings.max_content_bytes,
            max_body_bytes: settings.max_body_bytes,
            max_ws_frame_bytes: settings.max_ws_frame_bytes,
            ws_read_buffer_bytes: settings.ws_read_buffer_bytes,
            ws_write_buffer_bytes: settings.ws_write_buffer_bytes,
            ws_token_grace: settings.ws_token_grace(),
            ws_flush_timeout: std::time::Duration::from_secs(settings.ws_flush_timeout_secs),
            ws_max_age: settings.ws_max_age(),
        };
        let rate_limits = RateLimits::new(rate_limit_store(&settings).await?, &settings.fail_closed_tiers());
        let shutdown = CancellationToken::new();
        let mux = crate::mux::Multiplexer::new(
            core.clone(),
            tokens.clone(),
            crate::mux::MuxSettings {
                min_streams: settings.chat_core_mux_streams,
                conns_per_stream: settings.chat_core_mux_sockets_per_stream,
            },
        );
        let state = Arc::new(AppState {
            mux,
            core,
            tokens,
            external,
            limits,
            rate_limits,
            trust_forwarded_for: settings.trust_forwarded_for,
            serves_tls: settings.tls_cert.is_some(),
            allowed_origins: AllowedOrigins::parse(&settings.allowed_origins)
                .map_err(|message| anyhow::anyhow!(message))?,
            health: health.clone(),
            shutdown: shutdown.clone(),
            connections: Connections::new(settings.max_connections_per_user, settings.max_connections_per_ip),
        });
        let state_core = state.core.clone();
        let connections = state.connections.clone();
        let router = router(state, &settings);
        let (listener, local_addr) = chat_common::net::bind(settings.listen).await?;
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .with_context(|| {
                        format!(
                            "failed to load TLS certificate {} and key {}",
                            cert.display(),
                            key.display()
                        )
                    })?,
            ),
            _ => None,
        };
        Ok(Self {
            listener,
            local_addr,
            router,
            core: state_core,
            health,
            shutdown,
            shutdown_timeout: settings.shutdown_timeout(),
            tls,
            timeouts: ConnectionTimeouts {
                header_read: std::time::Duration::from_secs(settings.header_read_timeout_secs),
                idle: std::time::Duration::from_secs(settings.idle_timeout_secs),
            },
            connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Readiness of this gateway: chat-core reachable, not draining.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves until `stop` completes, then drains: readiness turns red, the
    /// listener stops accepting, in-flight requests finish, SSE and gRPC-Web
    /// streams end and WebSockets close with 1012, all within the shutdown
    /// deadline.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr, "gateway listening");
        let probe = tokio::spawn(probe_chat_core(self.core.clone(), self.health.clone()));
        let draining = self.shutdown.clone();
        let health = self.health.clone();
        let result = chat_common::shutdown::drain(
            stop,
            &health,
            self.shutdown_timeout,
            draining.clone(),
            self.serve(draining),
        )
        .await;
        probe.abort();
        tracing::info!("gateway stopped");
        result
    }

    /// Serves HTTP (and HTTPS with `--tls-cert`) with hyper's header read
    /// timeout and the idle-connection timeout ([`IdleAcceptor`]).
    async fn serve(self, draining: CancellationToken) -> anyhow::Result<()> {
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            draining.cancelled().await;
            stopping.graceful_shutdown(None);
        });
        let listener = self
            .listener
            .into_std()
            .context("failed to hand the listener to the server")?;
        let idle = client_acceptor(self.timeouts.idle);
        let mut server = axum_server::from_tcp(listener).context("failed to serve on the listener")?;
        // Also bounds how long a kept-alive connection waits for its next request.
        server
            .http_builder()
            .http1()
            .header_read_timeout(self.timeouts.header_read);
        let server = server.handle(handle);
        let served = match self.tls {
            Some(tls) => server
                .acceptor(RustlsAcceptor::new(tls).acceptor(idle))
                .serve(service)
                .await
                .context("server failed"),
            None => server
                .acceptor(idle)
                .serve(service)
                .await
                .context("server failed"),
        };
        // Upgraded WebSockets and streams outlive their HTTP connections'
        // tracking: they close themselves on `draining` (1012, a final event
        // or trailers); wait for that within the drain deadline.
        self.connections.all_closed().await;
        served
    }
}

/// How client connections are accepted: `TCP_NODELAY` (a turn's frames go
/// out as they are written, never held for the client's delayed ACK), and
/// closed once idle for `idle`. TLS, when on, wraps this.
fn client_acceptor(idle: std::time::Duration) -> IdleAcceptor<NoDelayAcceptor> {
    IdleAcceptor::new(NoDelayAcceptor, idle)
}

/// How often the gateway checks that chat-core answers.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps the `chat-core` readiness check current.
async fn probe_chat_core(core: CoreClient, health: Health) {
    let mut reachable = None;
    loop {
        let now = core.is_reachable().await;
        health.set("chat-core", now);
        if reachable != Some(now) {
            if now {
                tracing::info!("chat-core reachable");
            } else {
                tracing::warn!("chat-core unreachable: not ready");
            }
            reachable = Some(now);
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Runs a gateway from its settings: logging, the admin listener, then the
/// server until SIGTERM or Ctrl-C. What the `gateway` binary and `chat
/// gateway` do.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    settings.load_secret_files().map_err(anyhow::Error::msg)?;
    settings.validate().map_err(anyhow::Error::msg)?;
    let _telemetry = chat_common::telemetry::init("gateway", settings.log_format, LOG_FILTER);
    let admin_listen = settings.admin_listen;
    let app = Application::build(settings).await?;
    let health = app.health().clone();
    chat_common::admin::until_signal(admin_listen, health, |stop| app.run_until_stopped(stop)).await
}

/// Log levels when `RUST_LOG` is unset.
pub const LOG_FILTER: &str = "info";

/// Redis when `--redis-url` is set (limits shared by every replica), else in memory.
async fn rate_limit_store(settings: &Settings) -> anyhow::Result<Arc<dyn RateLimitStore>> {
    let policies = settings.rate_limit_policies();
    Ok(match &settings.redis_url {
        Some(url) => Arc::new(
            RedisStore::connect(url.expose_secret(), &settings.rate_limit_redis_prefix, policies)
                .await
                .context("failed to set up rate limits in redis")?,
        ),
        None => MemoryStore::new(policies),
    })
}

/// Every route, with the middleware stack around it.
pub fn router(state: SharedState, settings: &Settings) -> Router {
    let cors = state.allowed_origins.cors_layer();
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/sessions", get(sessions::list).post(sessions::create))
        .route(
            "/sessions/{id}",
            get(sessions::get)
                .patch(sessions::rename)
                .delete(sessions::delete),
        )
        .route("/sessions/{id}/resolve", post(handoff::resolve::<OwnerRoute>))
        .route("/sessions/{id}/end", post(sessions::end))
        .route("/sessions/{id}/hand-back", post(handoff::hand_back::<OwnerRoute>))
        .route(
            "/sessions/{id}/messages",
            get(messages::list).post(messages::post),
        )
        .route("/sessions/{id}/runs/{run_id}/cancel", post(messages::cancel))
        .route("/agents", get(agents::list))
        .route("/me", get(operators::me))
        .route("/operator/sessions", get(operators::queue))
        .route("/operator/sessions/{id}/claim", post(operators::claim))
        .route("/operator/sessions/{id}/messages", post(operators::reply))
        .route("/operator/sessions/{id}/typing", post(operators::typing))
        .route(
            "/operator/sessions/{id}/hand-back",
            post(handoff::hand_back::<OperatorRoute>),
        )
        .route(
            "/operator/sessions/{id}/resolve",
            post(handoff::resolve::<OperatorRoute>),
        )
        .route("/ws", get(ws::upgrade))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::middleware::limit,
        ));

    let middleware = ServiceBuilder::new()
        .layer(middleware::map_request(drop_unusable_request_id))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(crate::access::request_span))
        .layer(middleware::from_fn(crate::access::log))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(security_header("x-content-type-options", "nosniff"))
        .layer(security_header("referrer-policy", "no-referrer"))
        .layer(security_header("x-frame-options", "DENY"))
        .layer(security_header(
            "content-security-policy",
            CONTENT_SECURITY_POLICY,
        ))
        .layer(cors)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            strict_transport_security,
        ))
        .layer(middleware::from_fn(scope_request_id));
    // Innermost: limits whose plain responses `json_errors` rewrites.
    let limits = ServiceBuilder::new()
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout(),
        ));

    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::app_js))
        .route("/js/{file}", get(page::module))
        .route("/vendor/{file}", get(page::vendor))
        .route("/app.css", get(page::app_css))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .nest("/api/v1", api)
        .merge(legacy::routes(state.clone()))
        .route_service(
            &format!("{}{{method}}", grpc_web::SERVICE_PREFIX),
            tonic_web::GrpcWebLayer::new().layer(GrpcWebProxy::new(state.clone())),
        )
        .fallback(not_found)
        .layer(legacy::socket::layer(state.clone()))
        .layer(middleware::from_fn(http_metrics))
        .layer(limits)
        .layer(middleware::from_fn(json_errors))
        .layer(middleware)
        .with_state(state)
}

/// Records `chat_http_request_duration_seconds{method, route, status}`; the
/// route is the matched pattern (ids never become label values).
async fn http_metrics(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = match *request.method() {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    metrics::histogram!(
        "chat_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_str().to_owned(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// HSTS, sent only on requests that came over TLS.
const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

/// Adds HSTS when the request came over TLS: the gateway terminates TLS itself
/// (`--tls-cert`), or a trusted proxy in front did and said so in
/// `X-Forwarded-Proto` (honoured only with `--trust-forwarded-for`).
async fn strict_transport_security(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let over_tls = state.serves_tls
        || state.trust_forwarded_for
            && request
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let mut response = next.run(request).await;
    if over_tls {
        response.headers_mut().insert(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    response
}

/// Longest client-supplied request id kept; longer or odd ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Removes a client's `x-request-id` that is too long or not plain
/// characters, so a fresh one is generated for logs and chat-core.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = request.headers().get(REQUEST_ID).is_none_or(|id| {
        id.len() <= MAX_REQUEST_ID_LEN
            && !id.is_empty()
            && id
                .as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    });
    if !usable {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Makes the request id travel with every chat-core call the handler makes.
async fn scope_request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    crate::core::with_request_id(id, next.run(request)).await
}

fn security_header(name: &'static str, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(HeaderName::from_static(name), HeaderValue::from_static(value))
}

async fn not_found(method: http::Method, uri: http::Uri) -> Response {
    if legacy::owns(uri.path()) {
        return legacy::error::endpoint_not_found(&method, uri.path());
    }
    ApiError::not_found("no such route").into_response()
}

/// Turns any error response that is not already JSON (from axum or tower-http
/// layers: 405, 413, timeouts, upgrade failures) into the JSON error shape;
/// on legacy paths, every error into the legacy shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let legacy = legacy::owns(request.uri().path());
    let response = as_json_error(next.run(request).await);
    if legacy {
        legacy::error::rewrite(response).await
    } else {
        response
    }
}

fn as_json_error(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "not found"),
        StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::Invalid, "method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::TooLarge, "request body is too large"),
        StatusCode::UNAUTHORIZED => (ErrorCode::Unauthenticated, "authentication required"),
        StatusCode::FORBIDDEN => (ErrorCode::Forbidden, "not allowed"),
        StatusCode::TOO_MANY_REQUESTS => (ErrorCode::RateLimited, "too many requests"),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            (ErrorCode::Unavailable, "request timed out or service unavailable")
        }
        s if s.is_client_error() => (ErrorCode::Invalid, "bad request"),
        _ => (ErrorCode::Internal, "internal error"),
    };
    let replacement = ApiError::new(code, message).with_status(status).into_response();
    let (replacement_parts, body) = replacement.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    if let Some(content_type) = replacement_parts.headers.get(CONTENT_TYPE) {
        parts.headers.insert(CONTENT_TYPE, content_type.clone());
    }
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use axum_server::accept::Accept;

    use super::*;

    #[tokio::test]
    async fn client_connections_are_accepted_with_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        assert!(
            !stream.nodelay().expect("nodelay readable"),
            "Nagle is on by default"
        );
        let (accepted, _service) = client_acceptor(std::time::Duration::from_secs(60))
            .accept(stream, ())
            .await
            .expect("accepted");
        assert!(accepted.get_ref().nodelay().expect("nodelay readable"));
    }
}
