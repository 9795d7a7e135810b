//! The deltas of a run still streaming, kept so a late subscriber can be
//! given the reply from index 0.

use std::sync::Mutex;

use crate::domain::RunId;

/// A run in flight and the text it has streamed so far.
#[derive(Debug)]
pub struct InflightRun {
    pub run_id: RunId,
    pub agent: String,
    pub attempt: u32,
    deltas: Mutex<Vec<String>>,
}

impl InflightRun {
    pub fn new(run_id: RunId, agent: String, attempt: u32) -> Self {
        Self {
            run_id,
            agent,
            attempt,
            deltas: Mutex::default(),
        }
    }

    /// Records the next delta and returns its index.
    pub fn push(&self, text: String) -> u32 {
        let mut deltas = self.deltas.lock().unwrap_or_else(|e| e.into_inner());
        deltas.push(text);
        u32::try_from(deltas.len() - 1).unwrap_or(u32::MAX)
    }

    /// The deltas so far, index 0 first.
    pub fn snapshot(&self) -> Vec<String> {
        self.deltas.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
