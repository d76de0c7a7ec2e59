//! inkling's server: the outer crate, the only one that knows the protocols.
//!
//! [`config`] resolves the settings; [`suggest`] runs the completion pipeline over
//! any [`Backend`](inkling_core::generate::Backend) (the stages are in
//! `inkling-core`, the in-process engine in `inkling-engine`); [`lsp`] (with
//! [`transport`] guarding stdio) and the loopback [`http`] endpoint are the front
//! ends; [`wire`] holds the JSON shapes of inkling's own messages; [`acceptance`]
//! counts what became of the suggestions shown, from the editor's reports.

pub mod acceptance;
pub mod config;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod lsp;
pub mod suggest;
pub mod transport;
pub mod wire;

/// The pipeline the server runs: the completion stages over the in-process engine.
pub type Pipeline = suggest::Suggester<inkling_engine::Engine>;
