//! Builders for the events of a run, and the split of a reply into streamed deltas.

use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{DeltaEvent, ErrorEvent, FinalEvent, HandoffEvent, RunEvent};
use futures::{Stream, StreamExt};

/// A piece of the reply, sent as soon as it is known.
pub fn delta(text: impl Into<String>) -> RunEvent {
    RunEvent {
        event: Some(Event::Delta(DeltaEvent { text: text.into() })),
    }
}

/// The complete reply, ending a successful run.
pub fn final_reply(content: impl Into<String>) -> RunEvent {
    RunEvent {
        event: Some(Event::Final(FinalEvent {
            content: content.into(),
        })),
    }
}

/// A failure ending the run; `retryable` says whether another attempt may succeed.
pub fn error(code: &str, message: impl Into<String>, retryable: bool) -> RunEvent {
    RunEvent {
        event: Some(Event::Error(ErrorEvent {
            code: code.to_owned(),
            message: message.into(),
            retryable,
        })),
    }
}

/// Streams a complete reply as word-sized deltas followed by the final event.
pub fn reply(text: String) -> impl Stream<Item = RunEvent> + Send + 'static {
    let mut events: Vec<RunEvent> = split_into_deltas(&text).into_iter().map(delta).collect();
    events.push(final_reply(text));
    futures::stream::iter(events)
}

/// Splits `text` into word-sized chunks whose concatenation is `text`.
///
/// Each chunk is a word with the whitespace that follows it (leading whitespace stays with
/// the first word). A text of one word and at least two characters is cut in half, so every
/// text longer than one character streams as at least two deltas.
pub fn split_into_deltas(text: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        let is_word = !c.is_whitespace();
        if is_word && !in_word && seen_word {
            chunks.push(&text[start..i]);
            start = i;
        }
        in_word = is_word;
        seen_word |= is_word;
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    if chunks.len() == 1 {
        let middle = text.chars().count() / 2;
        if let Some((at, _)) = text.char_indices().nth(middle).filter(|&(at, _)| at > 0) {
            return vec![&text[..at], &text[at..]];
        }
    }
    chunks
}

/// The agent the conversation is handed to when it escalates to a person:
/// chat-core moves a session whose run hands off to it to `pending_human`.
pub use chat_proto::HUMAN_AGENT as HUMAN;

/// The conversation moves to `to_agent`; when it ends an agent's events, that agent answers next.
pub fn handoff(to_agent: impl Into<String>, reason: impl Into<String>) -> RunEvent {
    RunEvent {
        event: Some(Event::Handoff(HandoffEvent {
            to_agent: to_agent.into(),
            reason: reason.into(),
        })),
    }
}

/// Hands the conversation to a person, then streams the reply sent while the user waits.
pub fn escalation(reason: String, reply: String) -> impl Stream<Item = RunEvent> + Send + 'static {
    futures::stream::iter([handoff(HUMAN, reason)]).chain(self::reply(reply))
}
