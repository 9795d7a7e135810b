//! The all-in-one `chat` binary's command line (see [`cli`]).

pub mod cli;
