//! Naughty input over every REST route and every WebSocket frame type: huge,
//! empty, wrong-typed, invalid UTF-8, deeply nested, control characters and
//! mixed-up ids. Each case must get a clear JSON error with the status
//! docs/api.md gives its code (never a 500, a panic or a stack trace), a bad
//! frame an `error` frame on a socket that stays open (a frame over the size
//! limit excepted), and a second user's requests and socket keep working
//! throughout.
//!
//! The cases are tables; [`World::check`] and [`Socket::check`] run them and
//! collect every mismatch, so one run reports them all.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Method};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TIMEOUT: Duration = Duration::from_secs(15);
const PASSWORD: &str = "correct horse battery";
/// A well-formed UUID that names no session and no run.
const UNKNOWN: &str = "0190f5c2-7b1e-7cc0-8000-00000000dead";
/// The gateway's defaults (docs/operations.md).
const MAX_CONTENT_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_WS_FRAME_BYTES: usize = 64 * 1024;
/// Far beyond serde_json's recursion limit (128).
const DEEP: usize = 10_000;

/// `[[[…]]]`, `depth` levels deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

// === REST cases ===

/// Who a request speaks for.
#[derive(Clone)]
enum Who {
    Nobody,
    Alice,
    /// An `Authorization` header value, as raw bytes.
    Header(Vec<u8>),
}

/// A request body, sent as `application/json` unless said otherwise.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
    /// Any text with `Content-Type: text/plain`.
    Plain(&'static str),
}

/// What the gateway must answer.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A JSON error with this status and code.
    Error(u16, &'static str),
    /// Accepted: naughty but legal input.
    Ok(u16),
}

/// One naughty request.
struct Case {
    what: String,
    method: Method,
    path: String,
    who: Who,
    body: Body,
    expect: Expect,
}

fn case(what: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
    Case {
        what: what.into(),
        method,
        path: path.into(),
        who: Who::Alice,
        body: Body::None,
        expect: Expect::Ok(200),
    }
}

impl Case {
    fn who(mut self, who: Who) -> Self {
        self.who = who;
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Body::Json(body);
        self
    }

    fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Raw(body.into());
        self
    }

    fn plain(mut self, body: &'static str) -> Self {
        self.body = Body::Plain(body);
        self
    }

    fn error(mut self, status: u16, code: &'static str) -> Self {
        self.expect = Expect::Error(status, code);
        self
    }

    fn ok(mut self, status: u16) -> Self {
        self.expect = Expect::Ok(status);
        self
    }
}

/// Ids of one user's world: a session with one finished run, and a spare
/// session that cases may resolve and end.
struct User {
    token: String,
    session: String,
    run: String,
    spare: String,
}

/// A route's path in the world's terms.
type PathOf = fn(&World) -> String;

/// The POST routes that read a JSON body, with a string field of it.
const BODY_ROUTES: &[(&str, PathOf, &str)] = &[
    ("register", |_| "/api/v1/auth/register".into(), "username"),
    ("login", |_| "/api/v1/auth/login".into(), "password"),
    ("refresh", |_| "/api/v1/auth/refresh".into(), "refresh_token"),
    ("logout", |_| "/api/v1/auth/logout".into(), "refresh_token"),
    ("create session", |_| "/api/v1/sessions".into(), "title"),
    ("resolve", |w| w.spare("/resolve"), "notes"),
    ("post message", |w| w.path("/messages"), "content"),
];

/// Every route with a session id in its path.
fn session_routes(id: &str, run: &str) -> Vec<(Method, String)> {
    let base = format!("/api/v1/sessions/{id}");
    vec![
        (Method::GET, base.clone()),
        (Method::POST, format!("{base}/resolve")),
        (Method::POST, format!("{base}/end")),
        (Method::GET, format!("{base}/messages")),
        (Method::POST, format!("{base}/messages")),
        (Method::POST, format!("{base}/runs/{run}/cancel")),
        (Method::DELETE, base),
    ]
}

/// Bodies no route accepts: (what, body, expected status and code).
/// `field` is a string field of the route's body (unknown fields are skipped
/// unread, so naughty values must sit in a known one).
fn bad_bodies(field: &str) -> Vec<(&'static str, Body, u16, &'static str)> {
    vec![
        ("an empty body", Body::Raw(Vec::new()), 400, "invalid"),
        ("no body and no content type", Body::None, 400, "invalid"),
        ("text/plain", Body::Plain("{}"), 400, "invalid"),
        ("null", Body::Json(Value::Null), 400, "invalid"),
        ("an array", Body::Json(json!([1, 2])), 400, "invalid"),
        ("a string", Body::Json(json!("hello")), 400, "invalid"),
        ("malformed JSON", Body::Raw(b"{\"a\":".to_vec()), 400, "invalid"),
        (
            "invalid UTF-8",
            Body::Raw([format!("{{\"{field}\":\"").as_bytes(), b"\xff\xfe\"}"].concat()),
            400,
            "invalid",
        ),
        (
            "deep nesting",
            Body::Raw(nested(DEEP).into_bytes()),
            400,
            "invalid",
        ),
        (
            "deep nesting in a field",
            Body::Raw(format!("{{\"{field}\":{}}}", nested(DEEP)).into_bytes()),
            400,
            "invalid",
        ),
        (
            "a body over the limit",
            Body::Raw(vec![b' '; MAX_BODY_BYTES + 1]),
            413,
            "too_large",
        ),
        (
            "a NUL byte outside strings",
            Body::Raw(b"{\0}".to_vec()),
            400,
            "invalid",
        ),
    ]
}

// === the world ===

struct World {
    http: reqwest::Client,
    base: String,
    alice: User,
    bob: User,
    /// Every mismatch, reported together at the end.
    failures: Vec<String>,
}

impl World {
    async fn start() -> anyhow::Result<(chat_testkit::Stack, Self)> {
        let stack = chat_testkit::Stack::builder()
            .gateway(|settings| {
                let plenty = std::num::NonZeroU32::new(1_000_000).unwrap();
                settings.rate_limit_max_requests = plenty;
                settings.auth_rate_limit_max = plenty;
                settings.message_rate_limit = plenty;
            })
            .start()
            .await?;
        let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let base = stack.gateway().url("");
        let alice = user(&http, &base, "alice").await?;
        let bob = user(&http, &base, "bob").await?;
        let world = Self {
            http,
            base,
            alice,
            bob,
            failures: Vec::new(),
        };
        Ok((stack, world))
    }

    /// A path under Alice's session.
    fn path(&self, tail: &str) -> String {
        format!("/api/v1/sessions/{}{tail}", self.alice.session)
    }

    /// A path under Alice's spare session.
    fn spare(&self, tail: &str) -> String {
        format!("/api/v1/sessions/{}{tail}", self.alice.spare)
    }

    /// Sends `case` and records how its answer differs from the expected one.
    async fn check(&mut self, case: Case) {
        let Case {
            what,
            method,
            path,
            who,
            body,
            expect,
        } = case;
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        request = match who {
            Who::Nobody => request,
            Who::Alice => request.bearer_auth(&self.alice.token),
            Who::Header(value) => request.header("authorization", HeaderValue::from_bytes(&value).unwrap()),
        };
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(bytes) => request.header("content-type", "application/json").body(bytes),
            Body::Plain(text) => request.header("content-type", "text/plain").body(text),
        };
        let label = format!("{what} ({method} {})", shorten(&path));
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return self.failures.push(format!("{label}: no answer: {err}")),
        };
        let status = response.status().as_u16();
        let json_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = response.text().await.unwrap_or_default();
        if let Some(problem) = judge(expect, status, json_type, &text) {
            self.failures
                .push(format!("{label}: {problem}; got {status} {}", shorten(&text)));
        }
        self.bob_is_served().await;
    }

    /// Bob's session answers him, whatever Alice just sent.
    async fn bob_is_served(&mut self) {
        let url = format!("{}/api/v1/sessions/{}", self.base, self.bob.session);
        let status = match self.http.get(url).bearer_auth(&self.bob.token).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        if status != 200 {
            self.failures.push(format!("bob's session answered {status}"));
        }
    }
}

/// What is wrong with an answer, if anything.
fn judge(expect: Expect, status: u16, json_type: bool, text: &str) -> Option<String> {
    if status >= 500 {
        return Some("a server error".into());
    }
    for leak in ["panicked", "backtrace", ".rs:", "RUST_"] {
        if text.contains(leak) {
            return Some(format!("the body leaks `{leak}`"));
        }
    }
    match expect {
        Expect::Ok(want) => (status != want).then(|| format!("expected {want}")),
        Expect::Error(want, code) => {
            let body: Value = serde_json::from_str(text).unwrap_or_default();
            let error = &body["error"];
            if status != want || error["code"] != code {
                Some(format!("expected {want} `{code}`"))
            } else if !json_type {
                Some("the error is not `application/json`".into())
            } else if error["message"].as_str().is_none_or(str::is_empty) {
                Some("the error has no message".into())
            } else {
                None
            }
        }
    }
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(160).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short.escape_debug().to_string()
}

/// Registers `name`, creates a session and runs one turn in it.
async fn user(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<User> {
    let credentials = json!({"username": name, "password": PASSWORD});
    let url = |path: &str| format!("{base}/api/v1{path}");
    http.post(url("/auth/register"))
        .json(&credentials)
        .send()
        .await?
        .error_for_status()?;
    let pair: Value = http
        .post(url("/auth/login"))
        .json(&credentials)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let session: Value = http
            .post(url("/sessions"))
            .bearer_auth(&token)
            .json(&json!({"agent": "echo"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        sessions.push(session["id"].as_str().unwrap().to_owned());
    }
    let (session, spare) = (sessions.remove(0), sessions.remove(0));
    let posted: Value = http
        .post(url(&format!("/sessions/{session}/messages")))
        .bearer_auth(&token)
        .json(&json!({"content": "hello", "client_msg_id": "first"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run = posted["run"]["run_id"].as_str().unwrap().to_owned();
    Ok(User {
        token,
        session,
        run,
        spare,
    })
}

// === REST ===

#[tokio::test]
async fn naughty_requests_get_clear_json_errors() -> anyhow::Result<()> {
    let (_stack, mut world) = World::start().await?;
    let (alice, bob) = (&world.alice, &world.bob);
    let (own, own_run) = (alice.session.clone(), alice.run.clone());
    let (bobs, bobs_run) = (bob.session.clone(), bob.run.clone());

    let mut cases = Vec::new();

    // Bodies: every POST route that reads one, every bad body.
    for (route, path, field) in BODY_ROUTES {
        let path = path(&world);
        for (what, body, status, code) in bad_bodies(field) {
            let optional = matches!(*route, "logout" | "resolve");
            // A body that may be left out may be empty. Reported: such routes
            // also read JSON whatever its `Content-Type` (`ApiJson` insists).
            let lenient = ["an empty body", "no body and no content type", "text/plain"];
            let expect = if optional && lenient.contains(&what) {
                Expect::Ok(if *route == "logout" { 204 } else { 200 })
            } else {
                Expect::Error(status, code)
            };
            let mut c = case(format!("{route}: {what}"), Method::POST, path.clone());
            c.body = body;
            c.expect = expect;
            cases.push(c);
        }
    }

    // Wrong types and control characters in each route's fields.
    let wrong_types = [
        ("register", json!({"username": 5, "password": PASSWORD})),
        ("register", json!({"username": ["alice"], "password": PASSWORD})),
        ("register", json!({"username": "alice"})),
        ("login", json!({"username": "alice", "password": {"a": 1}})),
        ("refresh", json!({"refresh_token": 7})),
        ("logout", json!({"refresh_token": false})),
        ("create session", json!({"title": 1})),
        ("create session", json!({"metadata": [1, 2]})),
        ("create session", json!({"metadata": "x"})),
        ("create session", json!({"agent": null, "concurrency": 3})),
        ("resolve", json!({"notes": ["n"]})),
        ("post message", json!({"content": 5})),
        ("post message", json!({"content": null})),
        ("post message", json!({"content": "hi", "client_msg_id": 9})),
        ("post message", json!({"client_msg_id": "m"})),
    ];
    for (route, body) in wrong_types {
        let (_, path, _) = BODY_ROUTES.iter().find(|(r, _, _)| *r == route).unwrap();
        let path = path(&world);
        cases.push(
            case(format!("{route}: wrong types {body}"), Method::POST, path)
                .json(body)
                .error(400, "invalid"),
        );
    }
    let messages = world.path("/messages");
    cases.extend([
        case("username with a NUL", Method::POST, "/api/v1/auth/register")
            .who(Who::Nobody)
            .json(json!({"username": "al\u{0}ice", "password": PASSWORD}))
            .error(400, "invalid"),
        case("username with a newline", Method::POST, "/api/v1/auth/login")
            .who(Who::Nobody)
            .json(json!({"username": "alice\n", "password": PASSWORD}))
            .error(401, "unauthenticated"),
        case("huge username", Method::POST, "/api/v1/auth/register")
            .who(Who::Nobody)
            .json(json!({"username": "a".repeat(50_000), "password": PASSWORD}))
            .error(400, "invalid"),
        case("empty credentials", Method::POST, "/api/v1/auth/login")
            .who(Who::Nobody)
            .json(json!({"username": "", "password": ""}))
            .error(401, "unauthenticated"),
        case(
            "refresh token of control characters",
            Method::POST,
            "/api/v1/auth/refresh",
        )
        .who(Who::Nobody)
        .json(json!({"refresh_token": "\u{0}\u{1b}[31m\r\n"}))
        .error(401, "unauthenticated"),
        case("empty content", Method::POST, &messages)
            .json(json!({"content": ""}))
            .error(400, "invalid"),
        case("blank content", Method::POST, &messages)
            .json(json!({"content": " \n\t "}))
            .error(400, "invalid"),
        case("content over the limit", Method::POST, &messages)
            .json(json!({"content": "x".repeat(MAX_CONTENT_BYTES + 1)}))
            .error(413, "too_large"),
        case("content with control characters", Method::POST, &messages)
            .json(json!({"content": "bell\u{7} esc\u{1b}[2J del\u{7f}"}))
            .ok(200),
        // U+0000 cannot be stored (Postgres text refuses it): refused on every database alike.
        case("content with a NUL", Method::POST, &messages)
            .json(json!({"content": "nul\u{0}"}))
            .error(400, "invalid"),
        case("client_msg_id with a control character", Method::POST, &messages)
            .json(json!({"content": "hi", "client_msg_id": "a\u{7}"}))
            .error(400, "invalid"),
        case("client_msg_id with a space", Method::POST, &messages)
            .json(json!({"content": "hi", "client_msg_id": "a b"}))
            .error(400, "invalid"),
        case("client_msg_id over 128 characters", Method::POST, &messages)
            .json(json!({"content": "hi", "client_msg_id": "x".repeat(129)}))
            .error(400, "invalid"),
        case("empty client_msg_id", Method::POST, &messages)
            .json(json!({"content": "hi", "client_msg_id": ""}))
            .error(400, "invalid"),
        case(
            "title and metadata with control characters",
            Method::POST,
            "/api/v1/sessions",
        )
        .json(json!({"title": "t\u{1b}", "metadata": {"k\u{1}": "v\u{7}"}}))
        .ok(201),
        case("title with a NUL", Method::POST, "/api/v1/sessions")
            .json(json!({"title": "t\u{0}"}))
            .error(400, "invalid"),
        case("metadata with a NUL", Method::POST, "/api/v1/sessions")
            .json(json!({"metadata": {"k\u{0}": "v"}}))
            .error(400, "invalid"),
        case("metadata nested 100 deep", Method::POST, "/api/v1/sessions")
            .json(json!({"metadata": {"a": serde_json::from_str::<Value>(&nested(100)).unwrap()}}))
            .ok(201),
        case("unknown agent", Method::POST, "/api/v1/sessions")
            .json(json!({"agent": "no-such-agent\u{0}"}))
            .error(400, "invalid"),
        case("unknown concurrency policy", Method::POST, "/api/v1/sessions")
            .json(json!({"concurrency": "yolo"}))
            .error(400, "invalid"),
        case(
            "resolve notes with control characters",
            Method::POST,
            world.spare("/resolve"),
        )
        .json(json!({"notes": "\u{1}\u{2}"}))
        .ok(200),
        case("resolve notes with a NUL", Method::POST, world.spare("/resolve"))
            .json(json!({"notes": "\u{0}"}))
            .error(400, "invalid"),
    ]);

    // Query strings.
    for (what, query) in [
        ("negative limit", "limit=-1"),
        ("limit not a number", "limit=ten"),
        ("limit beyond u32", "limit=99999999999"),
        ("invalid UTF-8 status", "status=%FF%FE"),
        ("unknown status", "status=%00bogus"),
    ] {
        cases.push(
            case(
                format!("sessions: {what}"),
                Method::GET,
                format!("/api/v1/sessions?{query}"),
            )
            .error(400, "invalid"),
        );
    }
    for (what, query) in [
        ("after_seq not a number", "after_seq=one"),
        ("before_seq beyond i64", "before_seq=99999999999999999999"),
        ("limit negative", "limit=-5"),
    ] {
        cases.push(
            case(
                format!("history: {what}"),
                Method::GET,
                world.path(&format!("/messages?{query}")),
            )
            .error(400, "invalid"),
        );
    }

    // Mixed-up ids on every route with a session in its path.
    let upper = own.to_ascii_uppercase();
    let simple = own.replace('-', "");
    let huge = "a".repeat(20_000);
    let id_cases: [(&str, &str, &str, Expect); 9] = [
        (
            "another user's session",
            &bobs,
            &own_run,
            Expect::Error(403, "forbidden"),
        ),
        (
            "another user's session, uppercase",
            &bobs.to_ascii_uppercase(),
            &own_run,
            Expect::Error(403, "forbidden"),
        ),
        (
            "an unknown session",
            UNKNOWN,
            &own_run,
            Expect::Error(404, "not_found"),
        ),
        (
            "a run id as session id",
            &own_run,
            &own_run,
            Expect::Error(404, "not_found"),
        ),
        (
            "a non-UUID session",
            "nope",
            &own_run,
            Expect::Error(404, "not_found"),
        ),
        (
            "a huge session id",
            &huge,
            &own_run,
            Expect::Error(404, "not_found"),
        ),
        (
            "a NUL in the session id",
            "%00",
            &own_run,
            Expect::Error(404, "not_found"),
        ),
        // Not a path at all: the extractor refuses it before any lookup.
        (
            "invalid UTF-8 in the session id",
            "%FF%FE",
            &own_run,
            Expect::Error(400, "invalid"),
        ),
        (
            "a newline in the session id",
            "a%0Ab",
            &own_run,
            Expect::Error(404, "not_found"),
        ),
    ];
    for (what, id, run, expect) in id_cases {
        for (method, path) in session_routes(id, run) {
            let mut c = case(what, method, path);
            if path_takes_body(&c.path) {
                c.body = Body::Json(json!({"content": "hi", "client_msg_id": "x"}));
            }
            c.expect = expect;
            cases.push(c);
        }
    }
    // The same session in another spelling is the same session.
    for spelling in [&upper, &simple] {
        cases.push(
            case(
                "own session, other spelling",
                Method::GET,
                format!("/api/v1/sessions/{spelling}"),
            )
            .ok(200),
        );
        cases.push(
            case(
                "own history, other spelling",
                Method::GET,
                format!("/api/v1/sessions/{spelling}/messages"),
            )
            .ok(200),
        );
    }
    // Runs: someone else's, a non-UUID, another spelling of one's own.
    let cancel = |session: &str, run: &str| format!("/api/v1/sessions/{session}/runs/{run}/cancel");
    cases.extend([
        case(
            "cancel another session's run",
            Method::POST,
            cancel(&own, &bobs_run),
        )
        .error(404, "not_found"),
        case(
            "cancel own run in another's session",
            Method::POST,
            cancel(&bobs, &own_run),
        )
        .error(403, "forbidden"),
        case("cancel an unknown run", Method::POST, cancel(&own, UNKNOWN)).error(404, "not_found"),
        case("cancel a non-UUID run", Method::POST, cancel(&own, "nope")).error(404, "not_found"),
        case(
            "cancel a run named by a session id",
            Method::POST,
            cancel(&own, &own),
        )
        .error(404, "not_found"),
        case("cancel a huge run id", Method::POST, cancel(&own, &huge)).error(404, "not_found"),
        case("cancel a run id with a NUL", Method::POST, cancel(&own, "%00")).error(404, "not_found"),
        // Run ids are canonicalised like session ids: another spelling of
        // one's own run names the same run.
        case(
            "cancel own finished run, uppercase",
            Method::POST,
            cancel(&own, &own_run.to_ascii_uppercase()),
        )
        .ok(202),
        case("cancel own finished run", Method::POST, cancel(&own, &own_run)).ok(202),
    ]);

    // Tokens on an authenticated route.
    let sessions = "/api/v1/sessions";
    let service_token = chat_common::token::TokenKeys::new(chat_testkit::SECRET.as_bytes()).sign(
        "gateway",
        chat_common::token::Role::Service,
        Duration::from_secs(60),
    )?;
    let foreign_token = chat_common::token::TokenKeys::new(b"another secret").sign(
        "alice",
        chat_common::token::Role::User,
        Duration::from_secs(60),
    )?;
    for (what, header) in [
        ("an empty header", Vec::new()),
        ("no scheme", world.alice.token.clone().into_bytes()),
        ("Basic", b"Basic YWxpY2U6cHc=".to_vec()),
        ("an empty bearer", b"Bearer ".to_vec()),
        ("garbage", b"Bearer garbage".to_vec()),
        ("invalid UTF-8", b"Bearer \xff\xfe".to_vec()),
        (
            "a huge token",
            format!("Bearer {}", "a".repeat(60_000)).into_bytes(),
        ),
        (
            "a token of another secret",
            format!("Bearer {foreign_token}").into_bytes(),
        ),
        ("a service token", format!("Bearer {service_token}").into_bytes()),
        (
            "a truncated token",
            format!("Bearer {}", &world.alice.token[..40]).into_bytes(),
        ),
    ] {
        cases.push(
            case(format!("token: {what}"), Method::GET, sessions)
                .who(Who::Header(header))
                .error(401, "unauthenticated"),
        );
    }
    cases.push(
        case("no token", Method::GET, sessions)
            .who(Who::Nobody)
            .error(401, "unauthenticated"),
    );

    // Routes and methods that do not exist, and the socket route without an upgrade.
    cases.extend([
        case("unknown route", Method::GET, "/api/v1/nope").error(404, "not_found"),
        case("empty session segment", Method::GET, "/api/v1/sessions//messages").error(404, "not_found"),
        case("wrong method", Method::PUT, sessions)
            .plain("{}")
            .error(405, "invalid"),
        case("websocket route without an upgrade", Method::GET, "/api/v1/ws").error(400, "invalid"),
        case("websocket route without a token", Method::GET, "/api/v1/ws")
            .who(Who::Nobody)
            .error(401, "unauthenticated"),
        case(
            "websocket route with a garbage query token",
            Method::GET,
            "/api/v1/ws?access_token=%FF%00",
        )
        .who(Who::Nobody)
        .error(401, "unauthenticated"),
        case("agents with a body of garbage", Method::GET, "/api/v1/agents").raw(vec![0xff; 100]),
    ]);

    // Last: deleting another user's session must not, and ending one's own works.
    cases.extend([
        case(
            "delete another user's session",
            Method::DELETE,
            format!("{sessions}/{bobs}"),
        )
        .error(403, "forbidden"),
        case("end own session", Method::POST, world.spare("/end")).ok(200),
        case("post to an ended session", Method::POST, world.spare("/messages"))
            .json(json!({"content": "hi"}))
            .error(409, "conflict"),
    ]);

    let count = cases.len();
    for c in cases {
        world.check(c).await;
    }
    assert!(
        world.failures.is_empty(),
        "{} of {count} naughty requests were answered wrongly:\n{}",
        world.failures.len(),
        world.failures.join("\n")
    );
    Ok(())
}

fn path_takes_body(path: &str) -> bool {
    path.ends_with("/messages") || path.ends_with("/resolve")
}

// === WebSocket ===

/// What a frame must get back.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// An `error` frame with this code; the socket stays open.
    Error(&'static str),
    /// A frame of this type; the socket stays open.
    Frame(&'static str),
}

/// What came back on a socket.
#[derive(Debug)]
enum Answer {
    Frame(Value),
    /// A close frame, with its code.
    Closed(Option<u16>),
    /// The connection ended without a close frame.
    Dropped,
    /// Nothing within [`TIMEOUT`].
    Silent,
}

struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    async fn open(base: &str, token: &str) -> anyhow::Result<Self> {
        let url = base.replacen("http://", "ws://", 1) + "/api/v1/ws";
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { stream })
    }

    async fn send(&mut self, message: Message) -> anyhow::Result<()> {
        tokio::time::timeout(TIMEOUT, self.stream.send(message)).await??;
        Ok(())
    }

    /// The next frame that answers a request (events of subscriptions skipped),
    /// or how the socket ended instead.
    async fn answer(&mut self) -> Answer {
        loop {
            let Ok(message) = tokio::time::timeout(TIMEOUT, self.stream.next()).await else {
                return Answer::Silent;
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                    let kind = frame["type"].as_str().unwrap_or_default();
                    if [
                        "error",
                        "pong",
                        "subscribed",
                        "unsubscribed",
                        "ack",
                        "authenticated",
                    ]
                    .contains(&kind)
                    {
                        return Answer::Frame(frame);
                    }
                }
                Some(Ok(Message::Close(frame))) => return Answer::Closed(frame.map(|f| f.code.into())),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Answer::Dropped,
            }
        }
    }

    /// Sends `message` and checks the answer; then that the socket still answers a ping.
    async fn check(&mut self, what: &str, message: Message, reply: Reply) -> Option<String> {
        if let Err(err) = self.send(message).await {
            return Some(format!("{what}: could not send: {err}"));
        }
        let answer = match self.answer().await {
            Answer::Frame(frame) => frame,
            ended => return Some(format!("{what}: no answer: {ended:?}")),
        };
        let text = answer.to_string();
        for leak in ["panicked", "backtrace", ".rs:"] {
            if text.contains(leak) {
                return Some(format!("{what}: the frame leaks `{leak}`: {}", shorten(&text)));
            }
        }
        let problem = match reply {
            Reply::Error(code) if answer["type"] != "error" || answer["code"] != code => {
                Some(format!("expected an `{code}` error"))
            }
            Reply::Error(_) if answer["message"].as_str().is_none_or(str::is_empty) => {
                Some("the error has no message".into())
            }
            Reply::Frame(kind) if answer["type"] != kind => Some(format!("expected `{kind}`")),
            _ => None,
        };
        if let Some(problem) = problem {
            return Some(format!("{what}: {problem}; got {}", shorten(&text)));
        }
        if self.send(Message::text(r#"{"type":"ping"}"#)).await.is_err()
            || !matches!(self.answer().await, Answer::Frame(f) if f["type"] == "pong")
        {
            return Some(format!("{what}: the socket no longer answers a ping"));
        }
        None
    }

    /// Sends raw bytes as a text frame (invalid UTF-8 included, which the client API refuses).
    async fn send_raw_text(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        self.send(Message::Frame(Frame::from_payload(
            header,
            payload.to_vec().into(),
        )))
        .await
    }
}

fn frame(value: Value) -> Message {
    Message::text(value.to_string())
}

#[tokio::test]
async fn naughty_frames_get_error_frames_and_the_socket_stays_open() -> anyhow::Result<()> {
    let (_stack, world) = World::start().await?;
    let (own, own_run) = (world.alice.session.as_str(), world.alice.run.as_str());
    let (bobs, bobs_run) = (world.bob.session.as_str(), world.bob.run.as_str());
    let mut bob = Socket::open(&world.base, &world.bob.token).await?;
    let subscribed = bob
        .check(
            "bob subscribes",
            frame(json!({"type": "subscribe", "session_id": bobs})),
            Reply::Frame("subscribed"),
        )
        .await;
    assert_eq!(subscribed, None);
    let mut ws = Socket::open(&world.base, &world.alice.token).await?;

    let deep = nested(DEEP);
    let send = |session: &str, id: Value, content: Value| {
        frame(json!({"type": "send", "session_id": session, "client_msg_id": id, "content": content}))
    };
    let cases: Vec<(&str, Message, Reply)> = vec![
        // Not a frame at all.
        ("empty text", Message::text(""), Reply::Error("invalid")),
        ("whitespace", Message::text(" \n\t"), Reply::Error("invalid")),
        ("null", Message::text("null"), Reply::Error("invalid")),
        ("an array", Message::text("[1,2]"), Reply::Error("invalid")),
        ("a number", Message::text("42"), Reply::Error("invalid")),
        (
            "malformed JSON",
            Message::text(r#"{"type":"#),
            Reply::Error("invalid"),
        ),
        (
            "deep nesting",
            Message::text(deep.clone()),
            Reply::Error("invalid"),
        ),
        (
            "deep nesting in a field",
            Message::text(format!(
                r#"{{"type":"send","session_id":"{own}","client_msg_id":"d","content":{deep}}}"#
            )),
            Reply::Error("invalid"),
        ),
        (
            "invalid UTF-8 binary",
            Message::binary(vec![0xff, 0xfe, 0x00]),
            Reply::Error("invalid"),
        ),
        (
            "empty binary",
            Message::binary(Vec::new()),
            Reply::Error("invalid"),
        ),
        (
            "a ping as binary",
            Message::binary(br#"{"type":"ping"}"#.to_vec()),
            Reply::Frame("pong"),
        ),
        ("NUL bytes", Message::text("\0\0\0"), Reply::Error("invalid")),
        // Types.
        (
            "no type",
            frame(json!({"session_id": own})),
            Reply::Error("invalid"),
        ),
        (
            "a numeric type",
            frame(json!({"type": 5})),
            Reply::Error("invalid"),
        ),
        (
            "an unknown type",
            frame(json!({"type": "SUBSCRIBE"})),
            Reply::Error("invalid"),
        ),
        (
            "a type with a NUL",
            frame(json!({"type": "ping\u{0}"})),
            Reply::Error("invalid"),
        ),
        (
            "a huge type",
            frame(json!({"type": "x".repeat(60_000)})),
            Reply::Error("invalid"),
        ),
        // subscribe
        (
            "subscribe: no session",
            frame(json!({"type": "subscribe"})),
            Reply::Error("invalid"),
        ),
        (
            "subscribe: numeric session",
            frame(json!({"type": "subscribe", "session_id": 7})),
            Reply::Error("invalid"),
        ),
        (
            "subscribe: after_seq a string",
            frame(json!({"type": "subscribe", "session_id": own, "after_seq": "1"})),
            Reply::Error("invalid"),
        ),
        (
            "subscribe: negative after_seq",
            frame(json!({"type": "subscribe", "session_id": own, "after_seq": -1})),
            Reply::Error("invalid"),
        ),
        (
            "subscribe: after_seq beyond i64",
            Message::text(format!(
                r#"{{"type":"subscribe","session_id":"{own}","after_seq":1e30}}"#
            )),
            Reply::Error("invalid"),
        ),
        (
            "subscribe: non-UUID session",
            frame(json!({"type": "subscribe", "session_id": "nope"})),
            Reply::Error("not_found"),
        ),
        (
            "subscribe: control characters",
            frame(json!({"type": "subscribe", "session_id": "\u{0}\u{1b}[2J"})),
            Reply::Error("not_found"),
        ),
        (
            "subscribe: unknown session",
            frame(json!({"type": "subscribe", "session_id": UNKNOWN})),
            Reply::Error("not_found"),
        ),
        (
            "subscribe: a run id",
            frame(json!({"type": "subscribe", "session_id": own_run})),
            Reply::Error("not_found"),
        ),
        (
            "subscribe: another user's session",
            frame(json!({"type": "subscribe", "session_id": bobs})),
            Reply::Error("forbidden"),
        ),
        (
            "subscribe: another user's session, uppercase",
            frame(json!({"type": "subscribe", "session_id": bobs.to_ascii_uppercase()})),
            Reply::Error("forbidden"),
        ),
        (
            "subscribe: own session, uppercase",
            frame(json!({"type": "subscribe", "session_id": own.to_ascii_uppercase()})),
            Reply::Frame("subscribed"),
        ),
        // unsubscribe
        (
            "unsubscribe: no session",
            frame(json!({"type": "unsubscribe"})),
            Reply::Error("invalid"),
        ),
        (
            "unsubscribe: non-UUID session",
            frame(json!({"type": "unsubscribe", "session_id": "nope"})),
            Reply::Error("not_found"),
        ),
        (
            "unsubscribe: own session, uppercase",
            frame(json!({"type": "unsubscribe", "session_id": own.to_ascii_uppercase()})),
            Reply::Frame("unsubscribed"),
        ),
        // send
        (
            "send: empty content",
            send(own, json!("e1"), json!("")),
            Reply::Error("invalid"),
        ),
        (
            "send: blank content",
            send(own, json!("e2"), json!(" \n ")),
            Reply::Error("invalid"),
        ),
        (
            "send: content over the limit",
            send(own, json!("e3"), json!("x".repeat(MAX_CONTENT_BYTES + 1))),
            Reply::Error("too_large"),
        ),
        (
            "send: numeric content",
            send(own, json!("e4"), json!(5)),
            Reply::Error("invalid"),
        ),
        (
            "send: no client_msg_id",
            frame(json!({"type": "send", "session_id": own, "content": "hi"})),
            Reply::Error("invalid"),
        ),
        (
            "send: numeric client_msg_id",
            send(own, json!(9), json!("hi")),
            Reply::Error("invalid"),
        ),
        (
            "send: client_msg_id with a control character",
            send(own, json!("a\u{7}"), json!("hi")),
            Reply::Error("invalid"),
        ),
        (
            "send: client_msg_id over 128 characters",
            send(own, json!("x".repeat(129)), json!("hi")),
            Reply::Error("invalid"),
        ),
        (
            "send: non-UUID session",
            send("nope", json!("e5"), json!("hi")),
            Reply::Error("not_found"),
        ),
        (
            "send: unknown session",
            send(UNKNOWN, json!("e6"), json!("hi")),
            Reply::Error("not_found"),
        ),
        (
            "send: another user's session",
            send(bobs, json!("e7"), json!("hi")),
            Reply::Error("forbidden"),
        ),
        (
            "send: content with control characters",
            send(own, json!("c1"), json!("bell\u{7} esc\u{1b}")),
            Reply::Frame("ack"),
        ),
        (
            "send: content with a NUL",
            send(own, json!("c1n"), json!("nul\u{0}")),
            Reply::Error("invalid"),
        ),
        (
            "send: own session, uppercase",
            send(&own.to_ascii_uppercase(), json!("c2"), json!("hi")),
            Reply::Frame("ack"),
        ),
        // cancel
        (
            "cancel: no run",
            frame(json!({"type": "cancel", "session_id": own})),
            Reply::Error("invalid"),
        ),
        (
            "cancel: numeric run",
            frame(json!({"type": "cancel", "session_id": own, "run_id": 1})),
            Reply::Error("invalid"),
        ),
        (
            "cancel: non-UUID run",
            frame(json!({"type": "cancel", "session_id": own, "run_id": "nope"})),
            Reply::Error("not_found"),
        ),
        (
            "cancel: unknown run",
            frame(json!({"type": "cancel", "session_id": own, "run_id": UNKNOWN})),
            Reply::Error("not_found"),
        ),
        (
            "cancel: another session's run",
            frame(json!({"type": "cancel", "session_id": own, "run_id": bobs_run})),
            Reply::Error("not_found"),
        ),
        (
            "cancel: own run in another user's session",
            frame(json!({"type": "cancel", "session_id": bobs, "run_id": own_run})),
            Reply::Error("forbidden"),
        ),
        (
            "cancel: a huge run id",
            frame(json!({"type": "cancel", "session_id": own, "run_id": "r".repeat(60_000)})),
            Reply::Error("not_found"),
        ),
        // auth
        (
            "auth: no token",
            frame(json!({"type": "auth"})),
            Reply::Error("invalid"),
        ),
        (
            "auth: numeric token",
            frame(json!({"type": "auth", "access_token": 5})),
            Reply::Error("invalid"),
        ),
        (
            "auth: garbage token",
            frame(json!({"type": "auth", "access_token": "garbage\u{0}"})),
            Reply::Error("unauthenticated"),
        ),
        (
            "auth: a huge token",
            frame(json!({"type": "auth", "access_token": "a".repeat(60_000)})),
            Reply::Error("unauthenticated"),
        ),
        (
            "auth: own token again",
            frame(json!({"type": "auth", "access_token": world.alice.token})),
            Reply::Frame("authenticated"),
        ),
    ];

    let mut failures = Vec::new();
    let count = cases.len();
    for (what, message, reply) in cases {
        failures.extend(ws.check(what, message, reply).await);
    }

    // Another user's valid token is a policy violation: `forbidden`, then
    // close 1008, on a socket of its own (a socket never goes on as another user).
    let mut switched = Socket::open(&world.base, &world.alice.token).await?;
    switched
        .send(frame(json!({"type": "auth", "access_token": world.bob.token})))
        .await?;
    match (switched.answer().await, switched.answer().await) {
        (Answer::Frame(error), Answer::Closed(Some(1008))) if error["code"] == "forbidden" => {}
        other => failures.push(format!(
            "auth: another user's token: expected forbidden, then close 1008, got {other:?}"
        )),
    }

    // A text frame of invalid UTF-8 breaks the protocol (RFC 6455 §8.1): the
    // socket closes with 1007 (invalid data), and only this one.
    ws.send_raw_text(b"{\"type\":\"ping\xff\"}").await?;
    match ws.answer().await {
        Answer::Closed(Some(1007)) => {}
        other => failures.push(format!("invalid UTF-8 text: expected close 1007, got {other:?}")),
    }
    // A frame over the limit closes the socket with 1009 (RFC 6455 §7.4.1).
    let mut ws = Socket::open(&world.base, &world.alice.token).await?;
    let huge = frame(
        json!({"type": "send", "session_id": own, "client_msg_id": "big", "content": "x".repeat(MAX_WS_FRAME_BYTES)}),
    );
    ws.send(huge).await?;
    match ws.answer().await {
        Answer::Closed(Some(1009)) => {}
        other => failures.push(format!(
            "frame over the limit: expected close 1009, got {other:?}"
        )),
    }

    // Bob's socket and session served him throughout.
    let reply = bob
        .check(
            "bob sends",
            send(bobs, json!("b1"), json!("still here")),
            Reply::Frame("ack"),
        )
        .await;
    failures.extend(reply);
    let mut world = world;
    world.bob_is_served().await;
    failures.extend(world.failures);

    assert!(
        failures.is_empty(),
        "{} of {} naughty frames were answered wrongly:\n{}",
        failures.len(),
        count + 2,
        failures.join("\n")
    );
    Ok(())
}
