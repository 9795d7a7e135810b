//! The chat page, compiled into the binary: the HTML, its stylesheet, and its
//! script as ES modules (the entry `/app.js` imports the ones under `/js/`,
//! which import the vendored libraries under `/vendor/`; no build step).

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

use crate::error::ApiError;

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const APP_CSS: &str = include_str!("../../static/app.css");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The modules served under `/js/`, by file name.
const MODULES: &[(&str, &str)] = &[
    ("actions.js", include_str!("../../static/js/actions.js")),
    ("api.js", include_str!("../../static/js/api.js")),
    ("auth.js", include_str!("../../static/js/auth.js")),
    ("composer.js", include_str!("../../static/js/composer.js")),
    ("config.js", include_str!("../../static/js/config.js")),
    ("connection.js", include_str!("../../static/js/connection.js")),
    ("conversation.js", include_str!("../../static/js/conversation.js")),
    ("dom.js", include_str!("../../static/js/dom.js")),
    ("frames.js", include_str!("../../static/js/frames.js")),
    ("markdown.js", include_str!("../../static/js/markdown.js")),
    ("operator.js", include_str!("../../static/js/operator.js")),
    ("outbox.js", include_str!("../../static/js/outbox.js")),
    ("render.js", include_str!("../../static/js/render.js")),
    ("sessions.js", include_str!("../../static/js/sessions.js")),
    ("state.js", include_str!("../../static/js/state.js")),
    ("unread.js", include_str!("../../static/js/unread.js")),
    ("util.js", include_str!("../../static/js/util.js")),
];

/// The vendored libraries under `/vendor/` (see `static/vendor/README.md`),
/// with their licences.
const VENDOR: &[(&str, &str, &str)] = &[
    (
        "marked.esm.js",
        JAVASCRIPT,
        include_str!("../../static/vendor/marked.esm.js"),
    ),
    (
        "purify.es.js",
        JAVASCRIPT,
        include_str!("../../static/vendor/purify.es.js"),
    ),
    ("README.md", TEXT, include_str!("../../static/vendor/README.md")),
    (
        "LICENSE.marked.txt",
        TEXT,
        include_str!("../../static/vendor/LICENSE.marked.txt"),
    ),
    (
        "LICENSE.dompurify.txt",
        TEXT,
        include_str!("../../static/vendor/LICENSE.dompurify.txt"),
    ),
    (
        "LICENSE-MPL.dompurify.txt",
        TEXT,
        include_str!("../../static/vendor/LICENSE-MPL.dompurify.txt"),
    ),
];

const TEXT: &str = "text/plain; charset=utf-8";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body)
}

/// `GET /`
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /app.js`: the entry module.
pub async fn app_js() -> impl IntoResponse {
    asset(JAVASCRIPT, APP_JS)
}

/// `GET /js/{file}`: one of the modules the entry imports.
pub async fn module(Path(file): Path<String>) -> Response {
    match MODULES.iter().find(|(name, _)| *name == file) {
        Some((_, body)) => asset(JAVASCRIPT, body).into_response(),
        None => ApiError::not_found("no such module").into_response(),
    }
}

/// `GET /vendor/{file}`: a vendored library or its licence.
pub async fn vendor(Path(file): Path<String>) -> Response {
    match VENDOR.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => asset(content_type, body).into_response(),
        None => ApiError::not_found("no such file").into_response(),
    }
}

/// `GET /app.css`
pub async fn app_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}
