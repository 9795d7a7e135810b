//! Runs that hand off: an agent whose events end with a handoff is followed by the agent it names.

use std::sync::Arc;

use chat_proto::agent::v1::run_event::Event;
use chat_proto::agent::v1::{RunEvent, RunRequest};
use futures::{Stream, StreamExt};

use super::{Registry, events, unknown_agent};

/// Most handoffs between agents within one run; one more is refused as a loop.
pub const MAX_HANDOFF_HOPS: usize = 3;

/// `ErrorEvent.code` of a run whose handoffs loop back or go on too long.
pub const HANDOFF_LOOP: &str = "handoff_loop";

/// Streams the events of `request.agent`, then of each agent it hands off to.
///
/// A handoff to another agent is checked before it is sent: the target must be served here, not
/// visited yet in this run, and within [`MAX_HANDOFF_HOPS`]; otherwise the run ends with a
/// non-retryable `handoff_loop` (or `unknown_agent`) error. A handoff to `human` ends the agent
/// chain; the escalating agent's own reply follows it.
pub fn follow(
    registry: Arc<Registry>,
    mut request: RunRequest,
) -> impl Stream<Item = RunEvent> + Send + 'static {
    async_stream::stream! {
        let mut visited = vec![request.agent.clone()];
        // Deltas streamed by agents that handed off: the final content repeats them, so it stays
        // the concatenation of every delta of the run.
        let mut streamed_before = String::new();
        loop {
            let Some(agent) = registry.get(&request.agent) else {
                yield unknown_agent(&request.agent);
                return;
            };
            let mut events = agent.run(&registry, &request);
            let mut next_agent = None;
            let mut streamed = String::new();
            while let Some(mut event) = events.next().await {
                next_agent = None;
                match &mut event.event {
                    Some(Event::Delta(delta)) => streamed.push_str(&delta.text),
                    Some(Event::Final(reply)) if !streamed_before.is_empty() => {
                        reply.content.insert_str(0, &streamed_before);
                    }
                    _ => {}
                }
                if let Some(Event::Handoff(handoff)) = &event.event
                    && handoff.to_agent != events::HUMAN
                {
                    if let Err(error) = check_hop(&registry, &visited, &handoff.to_agent) {
                        yield error;
                        return;
                    }
                    next_agent = Some(handoff.to_agent.clone());
                }
                yield event;
            }
            let Some(next_agent) = next_agent else {
                return;
            };
            tracing::debug!(from = %request.agent, to = %next_agent, "handoff");
            visited.push(next_agent.clone());
            streamed_before.push_str(&streamed);
            request.agent = next_agent;
        }
    }
}

/// Whether the run may hand off from the agents it has `visited` to `target`.
fn check_hop(registry: &Registry, visited: &[String], target: &str) -> Result<(), RunEvent> {
    if registry.get(target).is_none() {
        return Err(unknown_agent(target));
    }
    let path = || format!("{} -> {target}", visited.join(" -> "));
    if visited.iter().any(|agent| agent == target) {
        let message = format!("handoff loops back: {}", path());
        return Err(events::error(HANDOFF_LOOP, message, false));
    }
    if visited.len() > MAX_HANDOFF_HOPS {
        let message = format!("more than {MAX_HANDOFF_HOPS} handoffs in one run: {}", path());
        return Err(events::error(HANDOFF_LOOP, message, false));
    }
    Ok(())
}
