//! The one place statuses change: each change is checked against the
//! domain's transition rules, stored, and published to the session's
//! subscribers. Sessions in [`SessionLifecycle`], runs in [`RunLifecycle`].

mod run;
mod session;

pub use run::{AfterReply, RunLifecycle, SessionEffect};
pub use session::{QUEUE_TOPIC, SessionLifecycle};
