//! The one place statuses change: each change is checked against the
//! domain's transition rules, stored, and published to the session's
//! subscribers.

mod session;

pub use session::SessionLifecycle;
