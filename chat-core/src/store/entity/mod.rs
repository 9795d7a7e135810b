//! sea-orm entities, one per table of `migrations/`.

pub mod external_identity;
pub mod message;
pub mod refresh_token;
pub mod run;
pub mod session;
pub mod user;
