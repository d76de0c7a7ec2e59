//! inkling: a language server that serves inline code completions from a model
//! running inside its own process.
//!
//! The stages of a completion, each its own module (see `ARCHITECTURE.md`):
//! [`documents`] → [`context`] (with [`syntax`] and [`workspace`]) → [`prompt`] (with
//! [`template`]) → [`engine`] → [`postprocess`],
//! [`suggest`] runs them for both front ends: [`lsp`] (with [`transport`] guarding
//! stdio) and the loopback [`http`] endpoint; [`typed_through`] remembers recent
//! answers, and [`config`] / [`model_files`] sit behind them all.

pub mod config;
pub mod context;
pub mod documents;
pub mod engine;
#[cfg(test)]
mod fuzz;
pub mod gguf;
pub mod http;
pub mod lsp;
pub mod model_catalog;
pub mod model_check;
pub mod model_files;
pub mod postprocess;
pub mod prompt;
pub mod suggest;
pub mod syntax;
pub mod template;
#[cfg(test)]
mod test_gguf;
pub mod transport;
pub mod typed_through;
pub mod vocab;
pub mod workspace;
