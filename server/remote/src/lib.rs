//! Remote engines: an opt-in escalation from the in-process engine, for teams
//! with a serving engine (vLLM, SGLang, llama-server, Ollama, LM Studio).
//!
//! [`config`] is what the user writes and its resolved form; [`policy`] decides
//! which requests may go remote (the deny-list first); [`format`] builds the wire
//! bodies (`infill`, `openai`, `ollama`) from the same context the local engine
//! gets and reads the streamed events; [`client`] sends one streamed request with
//! its timeouts; [`breaker`] is the per-remote circuit breaker; [`stats`] counts
//! per backend; [`hedge`] is the [`Backend`](inkling_core::generate::Backend) that
//! races the remote against the local engine.

pub mod breaker;
pub mod client;
pub mod config;
pub mod format;
pub mod hedge;
pub mod policy;
pub mod stats;
