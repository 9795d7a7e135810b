//! Server-sent events for `POST /api/v1/sessions/{id}/messages` with
//! `Accept: text/event-stream`: the same JSON objects as the WebSocket frames,
//! each event named after its frame type.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use chat_proto::chat::v1 as pb;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use http::header::ACCEPT;

use chat_common::ErrorCode;
use chat_common::token_clock::TokenClock;
use tokio_util::sync::CancellationToken;

use crate::connections::ConnectionGuard;
use crate::frames::OutFrame;

/// True when the client asked for an event stream.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.trim()
                .split(';')
                .next()
                .is_some_and(|media| media.trim() == "text/event-stream")
        })
}

/// Streams the ack, then the run's events, until chat-core ends the stream.
/// A failure mid-stream becomes a final `error` event, as do the gateway
/// draining (`draining` cancelled) and the caller's token running out
/// (`clock`: its expiry and grace; a revoked sign-in ends the stream from
/// chat-core): the reply is still stored, and the client fetches it from
/// the session's messages.
pub fn send_stream<U>(
    ack: pb::Ack,
    rest: U,
    draining: CancellationToken,
    clock: TokenClock,
    guard: ConnectionGuard,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    U: Stream<Item = Result<pb::SendMessageEvent, tonic::Status>> + Send + 'static,
{
    let events = async_stream::stream! {
        // Counted under the caller's connection caps while the stream lasts.
        let _guard = guard;
        yield Ok(event(&OutFrame::from_ack(ack)));
        let mut rest = std::pin::pin!(rest);
        let mut expired = std::pin::pin!(clock.closed());
        loop {
            let item = tokio::select! {
                item = rest.next() => item,
                () = draining.cancelled() => {
                    let restarting = ErrorCode::Unavailable.status("server restarting; the reply is stored: read it from the session's messages");
                    yield Ok(event(&OutFrame::from_status(&restarting)));
                    break;
                }
                () = &mut expired => {
                    let expired = ErrorCode::Unauthenticated.status("access token expired; the reply is stored: read it from the session's messages");
                    yield Ok(event(&OutFrame::from_status(&expired)));
                    break;
                }
            };
            let Some(item) = item else { break };
            match item {
                Ok(pb::SendMessageEvent { event: Some(pb::send_message_event::Event::Ack(ack)) }) => {
                    yield Ok(event(&OutFrame::from_ack(ack)));
                }
                Ok(pb::SendMessageEvent { event: Some(pb::send_message_event::Event::SessionEvent(e)) }) => {
                    if let Some(frame) = OutFrame::from_session_event(e) {
                        yield Ok(event(&frame));
                    }
                }
                Ok(pb::SendMessageEvent { event: None }) => {}
                Err(status) => {
                    yield Ok(event(&OutFrame::from_status(&status)));
                    break;
                }
            }
        }
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn event(frame: &OutFrame) -> Event {
    Event::default().event(frame.kind()).data(frame.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn accept_header_selects_event_stream() {
        let mut headers = HeaderMap::new();
        assert!(!wants_event_stream(&headers));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream;q=0.9"),
        );
        assert!(wants_event_stream(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_event_stream(&headers));
    }
}
