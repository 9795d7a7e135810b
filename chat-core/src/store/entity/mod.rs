//! sea-orm entities, one per table of `migrations/`.

pub mod message;
pub mod run;
pub mod session;
pub mod user;
