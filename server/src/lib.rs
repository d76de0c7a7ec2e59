//! inkling: a language server that serves inline code completions from a model
//! running inside its own process.
//!
//! The stages of a completion, each its own module (see `ARCHITECTURE.md`):
//! [`documents`] → [`context`] (with [`syntax`]) → [`prompt`] → [`engine`] → [`postprocess`],
//! with [`lsp`] translating the protocol, [`transport`] guarding stdio, and [`config`] / [`model_files`] behind them.

pub mod config;
pub mod context;
pub mod documents;
pub mod engine;
pub mod lsp;
pub mod model_files;
pub mod postprocess;
pub mod prompt;
pub mod syntax;
pub mod transport;
