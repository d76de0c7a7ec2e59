//! What the engine is told: the model, the context, threads, warm documents,
//! speculation, the template and the prompt's budgets — resolved and bounded by
//! the server's settings before they get here.

use std::path::PathBuf;

use inkling_core::prompt::Budget;

/// Smallest context that holds a useful prompt and answer.
pub const MIN_CONTEXT_SIZE: u32 = 512;
/// Largest context asked of llama.cpp; the model's training context and the memory
/// its cache would take bound it further when the model is loaded.
pub const MAX_CONTEXT_SIZE: u32 = 131_072;

/// Whether this build has a GPU backend of llama.cpp compiled in.
pub const GPU_BACKEND: Option<&str> = if cfg!(feature = "cuda") {
    Some("CUDA")
} else if cfg!(feature = "vulkan") {
    Some("Vulkan")
} else if cfg!(any(feature = "metal", target_os = "macos")) {
    Some("Metal")
} else {
    None
};

/// Where draft tokens for speculative decoding come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// No drafts: one token per decode.
    Off,
    /// n-gram matches in the prompt and the text generated so far.
    PromptLookup,
    /// A second, smaller model with the same vocabulary.
    DraftModel(PathBuf),
}

/// The engine's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// A GGUF model: a path, or a name `inkling models` lists (`ollama:NAME`,
    /// `lmstudio:…`, `hf:ORG/REPO`); `None` means the default model.
    pub model: Option<PathBuf>,
    /// Context size in tokens. Set explicitly, never the model's training context,
    /// which can be 32k+ tokens and exhaust memory.
    pub context_size: u32,
    /// Threads used for decoding.
    pub threads: u32,
    /// Documents whose KV cache is kept warm (the one in use included).
    pub warm_states: u32,
    /// How generation is sped up.
    pub speculation: Speculation,
    /// The configured prompt template; `None` detects it from the model.
    pub template: Option<String>,
    /// Token budgets of the prompt's parts.
    pub budget: Budget,
    /// Layers offloaded to the GPU; 0 keeps the model on the CPU.
    pub gpu_layers: u32,
}

impl EngineOptions {
    /// These options for a context of `context_size` tokens (the one the model or
    /// the memory allowed): the prompt's parts shrink to their shares of it.
    pub fn fit_context(self, context_size: u32) -> EngineOptions {
        EngineOptions {
            context_size,
            budget: self.budget.fit(context_size),
            ..self
        }
    }
}
