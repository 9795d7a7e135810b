//! Test support for the chat backend's suites, used only as a
//! dev-dependency: a fresh database per test ([`TestDatabase`]), a TCP proxy
//! whose link can be cut ([`CuttableProxy`]), a `redis-server` of a test's
//! own ([`PrivateRedis`]), and [`Stack`], the one way
//! every suite starts real services (agent-workers, chat-cores, gateways) in
//! its own process on loopback, configured in code. The tests that run the
//! services as processes of the `chat` binary (chaos, graceful shutdown,
//! metrics, hardening) use `allinone/tests/common` instead.

mod db;
pub mod needs;
mod redis;
mod stack;

pub use db::{CuttableProxy, TestDatabase, socket_addr_of, with_database, with_host};
pub use redis::PrivateRedis;
pub use stack::{
    Core, Gateway, Rewrite, SECRET, SLOW_AGENTS, Stack, StackBuilder, Worker, agents_file, core, gateway,
    worker,
};
