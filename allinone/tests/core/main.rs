//! chat-core's suites: the gRPC API, the store, the bus, dispatch, agents and replicas, on
//! SQLite or (with `TEST_DATABASE_URL` / `TEST_REDIS_URL`) Postgres and Redis.

#![allow(clippy::unwrap_used)]

mod agents;
mod bus;
mod catch_up;
mod common;
mod database_outage;
mod entities;
mod external_users;
mod grpc;
mod internal_trust;
mod lifecycle;
mod metadata;
mod multiplex;
mod passwords;
mod python_worker;
mod refresh_tokens;
mod replicas;
mod retries;
mod store;
mod stream_ends;
mod tools;
