//! Settings: defaults, overridden by command-line flags, overridden by the
//! client's `initializationOptions`.
//!
//! The editor's configuration is the one a user edits most often, so it wins over
//! the flags that the editor integration put on the command line.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::postprocess::{self, Trigger};
use crate::prompt::Budget;

/// Everything the server can be told. All fields are optional so that one layer can
/// override another field by field; [`Settings`] fills the gaps with defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overrides {
    /// Path of a GGUF model; `None` means the default model.
    pub model: Option<PathBuf>,
    /// Context size in tokens of the llama context.
    pub context_size: Option<NonZeroU32>,
    /// Threads used for decoding.
    pub threads: Option<NonZeroU32>,
    /// Most tokens generated for one completion.
    pub max_tokens: Option<NonZeroU32>,
    /// Apply the full stop rules and filters (on by default).
    pub postprocess: Option<bool>,
    /// Suggest inside comments (off by default).
    pub comment_completions: Option<bool>,
    /// Serve the HTTP endpoint (`/v1/completions`, `/infill`) on 127.0.0.1 at this port.
    pub http_port: Option<u16>,
    /// Send `inkling/partialCompletion` notifications while generating (off by default).
    pub stream_partial: Option<bool>,
    /// Most time for the prompt of an automatic request, in ms; 0 means no limit.
    pub prompt_time_limit_ms: Option<u64>,
    /// Most time for generating an automatic request's answer, in ms (invoked: 3×).
    pub generation_time_limit_ms: Option<u64>,
    /// Documents whose KV cache is kept warm (the one in use included).
    pub warm_states: Option<NonZeroU32>,
    /// Draft tokens from n-gram matches in the prompt (off by default: on this
    /// class of CPU, verifying drafts costs more than it saves, see README).
    pub prompt_lookup: Option<bool>,
    /// A smaller GGUF model with the same vocabulary that drafts tokens.
    pub draft_model: Option<PathBuf>,
    /// The prompt template: `auto` (detected from the model), a family name, or a
    /// template with `{prefix}` and `{suffix}` placeholders.
    pub template: Option<String>,
    /// Most tokens of the window before the cursor.
    pub prefix_tokens: Option<u32>,
    /// Most tokens of the text after the cursor (FIM models).
    pub suffix_tokens: Option<u32>,
    /// Most tokens of the outline and other files' material together; 0 turns them off.
    pub extra_tokens: Option<u32>,
    /// Index the workspace's files in the background for the signatures code refers to.
    pub index_workspace: Option<bool>,
    /// After an answer, compute the next one as if it were accepted (on by default).
    pub prefetch: Option<bool>,
}

impl Overrides {
    /// Returns `self` with every field that `other` sets replaced by `other`'s value.
    pub fn overridden_by(self, other: Overrides) -> Overrides {
        Overrides {
            model: other.model.or(self.model),
            context_size: other.context_size.or(self.context_size),
            threads: other.threads.or(self.threads),
            max_tokens: other.max_tokens.or(self.max_tokens),
            postprocess: other.postprocess.or(self.postprocess),
            comment_completions: other.comment_completions.or(self.comment_completions),
            http_port: other.http_port.or(self.http_port),
            stream_partial: other.stream_partial.or(self.stream_partial),
            prompt_time_limit_ms: other.prompt_time_limit_ms.or(self.prompt_time_limit_ms),
            generation_time_limit_ms: other
                .generation_time_limit_ms
                .or(self.generation_time_limit_ms),
            warm_states: other.warm_states.or(self.warm_states),
            prompt_lookup: other.prompt_lookup.or(self.prompt_lookup),
            draft_model: other.draft_model.or(self.draft_model),
            template: other.template.or(self.template),
            prefix_tokens: other.prefix_tokens.or(self.prefix_tokens),
            suffix_tokens: other.suffix_tokens.or(self.suffix_tokens),
            extra_tokens: other.extra_tokens.or(self.extra_tokens),
            index_workspace: other.index_workspace.or(self.index_workspace),
            prefetch: other.prefetch.or(self.prefetch),
        }
    }

    /// Parses the client's `initializationOptions`; `null` means no overrides.
    pub fn from_json(value: Option<serde_json::Value>) -> Result<Overrides, String> {
        match value {
            // Neovim encodes an empty Lua table `{}` as `[]`.
            None | Some(serde_json::Value::Null) => Ok(Overrides::default()),
            Some(serde_json::Value::Array(items)) if items.is_empty() => Ok(Overrides::default()),
            Some(value) => serde_json::from_value(value)
                .map_err(|e| format!("invalid initializationOptions: {e}")),
        }
    }
}

/// Resolved settings, every value decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Path of a GGUF model; `None` means the default model.
    pub model: Option<PathBuf>,
    /// Context size in tokens. Set explicitly, never the model's training context,
    /// which can be 32k+ tokens and exhaust memory.
    pub context_size: u32,
    /// Threads used for decoding.
    pub threads: u32,
    /// Most tokens generated for one completion.
    pub max_tokens: u32,
    /// Options of the post-processing stage.
    pub postprocess: postprocess::Options,
    /// Port of the loopback HTTP endpoint; `None` (the default) serves none.
    pub http_port: Option<u16>,
    /// Stream partial completions to the client.
    pub stream_partial: bool,
    /// Time limits of automatic requests.
    pub time_limits: TimeLimits,
    /// Documents whose KV cache is kept warm.
    pub warm_states: u32,
    /// How generation is sped up.
    pub speculation: Speculation,
    /// The configured prompt template; `None` detects it from the model.
    pub template: Option<String>,
    /// Token budgets of the prompt's parts.
    pub budget: Budget,
    /// Whether the workspace is indexed in the background.
    pub index_workspace: bool,
    /// Whether the answer after accepting a suggestion is prefetched.
    pub prefetch: bool,
}

/// How long an automatic request may take; invoked requests (the user asked and
/// waits) get no prompt limit and [`INVOKED_GENERATION_FACTOR`] times the generation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLimits {
    /// Most time for the prompt; what was decoded by then stays in the cache, so the
    /// next keystroke carries on from there.
    pub prompt: Option<Duration>,
    /// Most time for generation, after the prompt.
    pub generation: Duration,
}

/// See [`TimeLimits`].
pub const INVOKED_GENERATION_FACTOR: u32 = 3;

impl TimeLimits {
    /// The limits for a request of kind `trigger`: (prompt, generation).
    pub fn for_trigger(&self, trigger: Trigger) -> (Option<Duration>, Duration) {
        match trigger {
            Trigger::Automatic => (self.prompt, self.generation),
            Trigger::Invoked => (None, self.generation * INVOKED_GENERATION_FACTOR),
        }
    }
}

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

/// Default context size: room for a ~1.5k-token prompt and its answer, with margin.
pub const DEFAULT_CONTEXT_SIZE: u32 = 4096;
/// Default prompt time limit of automatic requests (llama.vim's `t_max_prompt_ms`).
pub const DEFAULT_PROMPT_TIME_LIMIT_MS: u64 = 500;
/// Default generation time limit of automatic requests (llama.vim's `t_max_predict_ms`).
pub const DEFAULT_GENERATION_TIME_LIMIT_MS: u64 = 1000;
/// Default number of documents with a warm KV cache: each costs about 20 KB per
/// cached token with the default model (~15 MB for a typical prompt).
pub const DEFAULT_WARM_STATES: u32 = 4;
/// Default generation limit; a single suggestion rarely needs more. Automatic
/// requests also stop at a time limit, whichever comes first.
pub const DEFAULT_MAX_TOKENS: u32 = 128;

impl Settings {
    /// Fills the gaps of `overrides` with defaults.
    pub fn resolve(overrides: Overrides) -> Settings {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Settings {
            model: overrides.model,
            context_size: overrides
                .context_size
                .map_or(DEFAULT_CONTEXT_SIZE, NonZeroU32::get),
            threads: overrides.threads.map_or(cores, NonZeroU32::get),
            max_tokens: overrides
                .max_tokens
                .map_or(DEFAULT_MAX_TOKENS, NonZeroU32::get),
            postprocess: postprocess::Options {
                enabled: overrides.postprocess.unwrap_or(true),
                in_comments: overrides.comment_completions.unwrap_or(false),
            },
            http_port: overrides.http_port,
            stream_partial: overrides.stream_partial.unwrap_or(false),
            time_limits: TimeLimits {
                prompt: match overrides
                    .prompt_time_limit_ms
                    .unwrap_or(DEFAULT_PROMPT_TIME_LIMIT_MS)
                {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                },
                generation: Duration::from_millis(
                    overrides
                        .generation_time_limit_ms
                        .unwrap_or(DEFAULT_GENERATION_TIME_LIMIT_MS),
                ),
            },
            warm_states: overrides
                .warm_states
                .map_or(DEFAULT_WARM_STATES, NonZeroU32::get),
            speculation: match (overrides.draft_model, overrides.prompt_lookup) {
                (Some(path), _) => Speculation::DraftModel(path),
                (None, Some(true)) => Speculation::PromptLookup,
                (None, _) => Speculation::Off,
            },
            template: overrides.template,
            budget: {
                let defaults = Budget::default();
                let or = |value: Option<u32>, default: usize| value.map_or(default, |v| v as usize);
                Budget {
                    prefix_tokens: or(overrides.prefix_tokens, defaults.prefix_tokens).max(1),
                    suffix_tokens: or(overrides.suffix_tokens, defaults.suffix_tokens),
                    extra_tokens: or(overrides.extra_tokens, defaults.extra_tokens),
                }
            },
            index_workspace: overrides.index_workspace.unwrap_or(true),
            prefetch: overrides.prefetch.unwrap_or(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn initialization_options_override_flags_field_by_field() {
        let flags = Overrides {
            model: Some("/flag.gguf".into()),
            max_tokens: NonZeroU32::new(10),
            ..Overrides::default()
        };
        let client =
            Overrides::from_json(Some(json!({"maxTokens": 20, "contextSize": 1024}))).unwrap();
        let settings = Settings::resolve(flags.overridden_by(client));
        assert_eq!(settings.model, Some(PathBuf::from("/flag.gguf")));
        assert_eq!(settings.max_tokens, 20);
        assert_eq!(settings.context_size, 1024);
    }

    #[test]
    fn bad_options_are_reported() {
        assert!(Overrides::from_json(Some(json!({"maxTokens": "many"}))).is_err());
        assert!(Overrides::from_json(Some(json!({"maxTokens": 0}))).is_err());
        assert!(Overrides::from_json(Some(json!({"modle": "x"}))).is_err());
        assert_eq!(Overrides::from_json(None).unwrap(), Overrides::default());
        assert_eq!(
            Overrides::from_json(Some(json!([]))).unwrap(),
            Overrides::default()
        );
    }

    #[test]
    fn defaults_are_explicit() {
        let settings = Settings::resolve(Overrides::default());
        assert_eq!(settings.context_size, DEFAULT_CONTEXT_SIZE);
        assert_eq!(settings.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(settings.threads >= 1);
        assert_eq!(settings.warm_states, DEFAULT_WARM_STATES);
        assert_eq!(settings.speculation, Speculation::Off);
        let (prompt, generation) = settings.time_limits.for_trigger(Trigger::Automatic);
        assert_eq!(
            prompt,
            Some(Duration::from_millis(DEFAULT_PROMPT_TIME_LIMIT_MS))
        );
        assert_eq!(
            generation.as_millis() as u64,
            DEFAULT_GENERATION_TIME_LIMIT_MS
        );
        assert_eq!(settings.time_limits.for_trigger(Trigger::Invoked).0, None);
        let no_limit = Overrides::from_json(Some(json!({"promptTimeLimitMs": 0}))).unwrap();
        assert_eq!(Settings::resolve(no_limit).time_limits.prompt, None);
        let draft = Overrides::from_json(Some(json!({"draftModel": "/d.gguf"}))).unwrap();
        assert_eq!(
            Settings::resolve(draft).speculation,
            Speculation::DraftModel("/d.gguf".into())
        );
    }
}
