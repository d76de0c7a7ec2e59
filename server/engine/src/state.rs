//! What the engine reports: its state while loading and once loaded, and the
//! prompt it would decode.

use std::path::PathBuf;

use inkling_core::tokens::Token;

/// What the model is doing, as reported to clients.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineState {
    /// Finding, fetching or loading the model.
    Loading {
        /// A short description of the current step.
        message: String,
        /// Progress of the current step, 0–100, when known.
        percent: Option<u32>,
    },
    /// The model is loaded and requests are served.
    Ready(ModelInfo),
    /// The model could not be loaded; requests get empty answers.
    Failed(String),
}

/// Facts about the loaded model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The GGUF file.
    pub path: PathBuf,
    /// The prompt template's family (`prefix-only`, `qwen`, …).
    pub template: String,
    /// Context size in tokens.
    pub context_size: u32,
    /// Sentences the user should read (a setting this model or machine cannot honour).
    pub warnings: Vec<String>,
    /// Where the model's layers run: "the CPU", or "18 of 18 layers on CUDA0".
    pub placement: String,
}

impl ModelInfo {
    /// A one-line description for clients: "model ready: PATH (…)", then the warnings.
    pub fn describe(&self) -> String {
        let mut description = format!(
            "model ready: {} ({} template, context {} tokens, on {})",
            self.path.display(),
            self.template,
            self.context_size,
            self.placement
        );
        for warning in &self.warnings {
            description.push_str("; ");
            description.push_str(warning);
        }
        description
    }
}

/// The prompt the model would get for a context, for people and tests to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptView {
    /// The template's family.
    pub template: String,
    /// The prompt's tokens.
    pub tokens: Vec<Token>,
    /// The tokens' text, special tokens spelled out.
    pub text: String,
    /// Each token's text (a token may hold part of a character: lossy).
    pub pieces: Vec<String>,
    /// The text the first generated token must start with (token healing).
    pub healed: String,
}
