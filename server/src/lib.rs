//! inkling's server: the outer crate, the only one that knows the protocols.
//!
//! [`config`] resolves the settings; [`suggest`] runs the completion pipeline over
//! any [`Backend`](inkling_core::generate::Backend) (the stages are in
//! `inkling-core`, the in-process engine in `inkling-engine`, remote engines and
//! the hedging between them in `inkling-remote`); [`lsp`] (with
//! [`transport`] guarding stdio) and the loopback [`http`] endpoint are the front
//! ends; [`wire`] holds the JSON shapes of inkling's own messages; [`acceptance`]
//! counts what became of the suggestions shown, from the editor's reports.

use std::sync::{Arc, Mutex};

pub mod acceptance;
pub mod config;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod lsp;
pub mod suggest;
pub mod transport;
pub mod wire;

/// Ends the process at once with `code`: with `_exit`, not `exit`, since C++ static
/// destructors and atexit handlers (llama.cpp, ggml, OpenMP) racing with the engine
/// thread, which may be loading a model or decoding, can crash the process on its
/// way out. Nothing of ours needs them: Rust runs no destructors at exit either, and
/// stderr is flushed here.
pub fn exit_now(code: i32) -> ! {
    let _ = std::io::Write::flush(&mut std::io::stderr());
    // SAFETY: `_exit` ends the process; it is async-signal-safe and takes no pointer.
    unsafe { libc::_exit(code) }
}

/// The pipeline the server runs: the completion stages over the in-process engine,
/// hedged against a remote engine when one is configured.
pub type Pipeline = suggest::Suggester<inkling_remote::hedge::Hedged<inkling_engine::Engine>>;

/// The pipeline in use, shared by the front ends: replaced whole when a setting the
/// engine needs at load changes. Requests take their own `Arc` of it, so one in
/// progress ends on the pipeline it started on; the lock is held only to clone or
/// replace it, never across an `.await`.
#[derive(Clone)]
pub struct CurrentPipeline(Arc<Mutex<Arc<Pipeline>>>);

impl CurrentPipeline {
    /// `pipeline` as the one in use.
    pub fn new(pipeline: Arc<Pipeline>) -> CurrentPipeline {
        CurrentPipeline(Arc::new(Mutex::new(pipeline)))
    }

    /// The pipeline in use now.
    pub fn get(&self) -> Arc<Pipeline> {
        inkling_core::lock(&self.0).clone()
    }

    /// Puts `pipeline` in use; returns the one it replaces.
    pub fn replace(&self, pipeline: Arc<Pipeline>) -> Arc<Pipeline> {
        std::mem::replace(&mut *inkling_core::lock(&self.0), pipeline)
    }
}
