//! The harness's modes, one module each, and what they share.

pub mod deltas;
pub mod fanout;
pub mod idle;
pub mod reconnect;
pub mod settle;
pub mod soak;
pub mod turns;

use serde_json::{Value, json};

use crate::procs::{self, Watched};

/// The RSS of the watched processes at the start of a mode, to compare with its end.
pub struct RssWatch {
    watched: Vec<Watched>,
    before: Vec<u64>,
}

impl RssWatch {
    pub fn start(watched: &[Watched]) -> anyhow::Result<Self> {
        Ok(Self {
            watched: watched.to_vec(),
            before: procs::read_all(watched)?,
        })
    }

    /// Before, after and growth per process.
    pub fn finish(&self) -> anyhow::Result<Value> {
        let after = procs::read_all(&self.watched)?;
        Ok(json!(procs::changes(&self.watched, &self.before, &after)))
    }
}
