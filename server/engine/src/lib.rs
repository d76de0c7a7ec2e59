//! inkling's engine: the only crate that builds and calls llama.cpp.
//!
//! One worker thread owns the llama model and context; nothing else touches them.
//! Other threads hold an [`Engine`] handle: they send a
//! [`CompletionRequest`](inkling_core::generate::CompletionRequest) through the
//! [`Backend`](inkling_core::generate::Backend) seam and await a
//! [`Generation`](inkling_core::generate::Generation); they watch an
//! [`EngineState`] for loading progress. Around it: the model files
//! ([`model_files`], [`gguf`], [`model_catalog`], [`model_check`]) and the
//! vocabulary ([`vocab`]).
//!
//! Modules, in dependency order: [`options`], [`counters`], [`kv_plan`], `state` →
//! `sequence` → `draft`, `slots` → `session` → `worker`, `jobs` → `handle`.
//!
//! Invariants:
//! - The worker remembers which tokens its KV cache holds (`cached`); a new prompt
//!   keeps what [`kv_plan::plan`] says and decodes only the rest.
//! - Every request carries a cancel flag; the worker checks it before each decode
//!   call (prompt chunks of [`PROMPT_CHUNK`] tokens, then every generated token),
//!   so a cancelled or superseded request stops within one decode step.
//! - A failure to find or load the model leaves the worker answering "not ready";
//!   the process keeps running.

pub mod counters;
mod draft;
pub mod gguf;
mod handle;
mod jobs;
pub mod kv_plan;
pub mod model_catalog;
pub mod model_check;
pub mod model_files;
pub mod options;
mod sequence;
mod session;
mod slots;
mod state;
#[cfg(test)]
mod test_gguf;
pub mod vocab;
mod worker;

pub use counters::CountersSnapshot;
pub use draft::{greedy, lookup_draft};
pub use handle::Engine;
pub use options::{EngineOptions, GPU_BACKEND, Speculation};
pub use sequence::PROMPT_CHUNK;
pub use state::{EngineState, ModelInfo, PromptView};

/// Sends llama.cpp's and ggml's log lines to `tracing` (and so to stderr), never
/// to stdout.
pub fn send_logs_to_tracing() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// For `inkling --version`: the llama.cpp backends compiled in, the devices they
/// see and the CPU features ggml uses. Listing devices starts GPU backends.
pub fn describe_build() -> String {
    let backends = match GPU_BACKEND {
        Some(gpu) => format!("CPU, {gpu}"),
        None => "CPU only (build with `--features cuda`, `vulkan` or `metal` for a GPU)".into(),
    };
    let devices: Vec<String> = llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect();
    // SAFETY: returns a pointer to a static, NUL-terminated string inside llama.cpp.
    let system = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
    let features: Vec<&str> = system
        .to_str()
        .unwrap_or_default()
        .split('|')
        // "CPU : SSE3 = 1 | AVX = 1 | …": the first feature follows the backend's name.
        .filter_map(|f| f.rsplit(':').next())
        .map(str::trim)
        .filter(|f| f.ends_with("= 1"))
        .map(|f| f.trim_end_matches("= 1").trim())
        .collect();
    format!(
        "backends: {backends}\ndevices: {}\nCPU features in use: {}",
        devices.join(", "),
        features.join(" ")
    )
}
