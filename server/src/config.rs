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
    /// A GGUF model: a path, or a name `inkling models` lists (`ollama:NAME`,
    /// `lmstudio:…`, `hf:ORG/REPO`); `None` means the default model.
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
    /// Layers offloaded to the GPU, in builds with a GPU backend (default: all of them).
    pub gpu_layers: Option<u32>,
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
            gpu_layers: other.gpu_layers.or(self.gpu_layers),
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
    /// A GGUF model: a path, or a name `inkling models` lists (`ollama:NAME`,
    /// `lmstudio:…`, `hf:ORG/REPO`); `None` means the default model.
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
    /// Layers offloaded to the GPU; 0 keeps the model on the CPU.
    pub gpu_layers: u32,
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

/// Smallest context that holds a useful prompt and answer.
pub const MIN_CONTEXT_SIZE: u32 = 512;
/// Largest context asked of llama.cpp; the model's training context and the memory
/// its cache would take bound it further when the model is loaded.
pub const MAX_CONTEXT_SIZE: u32 = 131_072;
/// Most documents with a warm KV cache (each holds megabytes).
pub const MAX_WARM_STATES: u32 = 64;
/// Longest time limit, in ms: a suggestion later than this is of no use.
pub const MAX_TIME_LIMIT_MS: u64 = 60_000;

impl Settings {
    /// Fills the gaps of `overrides` with defaults and brings every value into the
    /// range this machine can honour. Returns one sentence for each value the user
    /// set out of range, naming the setting, its range and the value used instead;
    /// defaults that do not fit a small context shrink silently.
    pub fn resolve(overrides: Overrides) -> (Settings, Vec<String>) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let mut problems = Vec::new();
        let mut within = |name: &str, set: bool, value: u64, low: u64, high: u64, why: &str| {
            let bounded = value.clamp(low, high);
            if set && bounded != value {
                problems.push(format!(
                    "`{name}` = {value} is outside {low}–{high}{why}; using {bounded}"
                ));
            }
            bounded
        };
        let context_size = within(
            "contextSize",
            overrides.context_size.is_some(),
            overrides
                .context_size
                .map_or(DEFAULT_CONTEXT_SIZE, NonZeroU32::get)
                .into(),
            MIN_CONTEXT_SIZE.into(),
            MAX_CONTEXT_SIZE.into(),
            "",
        ) as u32;
        let quarter = u64::from(context_size / 4);
        let threads = within(
            "threads",
            overrides.threads.is_some(),
            overrides.threads.map_or(cores, NonZeroU32::get).into(),
            1,
            cores.into(),
            " (this machine's cores)",
        ) as u32;
        let max_tokens = within(
            "maxTokens",
            overrides.max_tokens.is_some(),
            overrides
                .max_tokens
                .map_or(DEFAULT_MAX_TOKENS, NonZeroU32::get)
                .into(),
            1,
            quarter,
            " (a quarter of the context)",
        ) as u32;
        let defaults = Budget::default();
        // The prompt's parts share the three quarters of the context that the answer
        // leaves: half for the window before the cursor, an eighth each for the rest.
        let mut budget = |name: &str, value: Option<u32>, default: usize, low: u64, share: u32| {
            within(
                name,
                value.is_some(),
                value.map_or(default as u64, u64::from),
                low,
                u64::from(context_size / share),
                " (a share of the context)",
            ) as usize
        };
        let budget = Budget {
            prefix_tokens: budget(
                "prefixTokens",
                overrides.prefix_tokens,
                defaults.prefix_tokens,
                1,
                2,
            ),
            suffix_tokens: budget(
                "suffixTokens",
                overrides.suffix_tokens,
                defaults.suffix_tokens,
                0,
                8,
            ),
            extra_tokens: budget(
                "extraTokens",
                overrides.extra_tokens,
                defaults.extra_tokens,
                0,
                8,
            ),
        };
        let warm_states = within(
            "warmStates",
            overrides.warm_states.is_some(),
            overrides
                .warm_states
                .map_or(DEFAULT_WARM_STATES, NonZeroU32::get)
                .into(),
            1,
            MAX_WARM_STATES.into(),
            "",
        ) as u32;
        let prompt_limit = within(
            "promptTimeLimitMs",
            overrides.prompt_time_limit_ms.is_some(),
            overrides
                .prompt_time_limit_ms
                .unwrap_or(DEFAULT_PROMPT_TIME_LIMIT_MS),
            0,
            MAX_TIME_LIMIT_MS,
            "",
        );
        let generation_limit = within(
            "generationTimeLimitMs",
            overrides.generation_time_limit_ms.is_some(),
            overrides
                .generation_time_limit_ms
                .unwrap_or(DEFAULT_GENERATION_TIME_LIMIT_MS),
            1,
            MAX_TIME_LIMIT_MS,
            "",
        );
        if GPU_BACKEND.is_none() && overrides.gpu_layers.is_some_and(|n| n > 0) {
            problems.push(
                "`gpuLayers` has no effect: this build of inkling has no GPU backend (build it with `--features cuda`, `vulkan` or `metal`); the model runs on the CPU".into(),
            );
        }
        let settings = Settings {
            model: overrides.model,
            context_size,
            threads,
            max_tokens,
            postprocess: postprocess::Options {
                enabled: overrides.postprocess.unwrap_or(true),
                in_comments: overrides.comment_completions.unwrap_or(false),
            },
            http_port: overrides.http_port,
            stream_partial: overrides.stream_partial.unwrap_or(false),
            time_limits: TimeLimits {
                prompt: (prompt_limit > 0).then(|| Duration::from_millis(prompt_limit)),
                generation: Duration::from_millis(generation_limit),
            },
            warm_states,
            speculation: match (overrides.draft_model, overrides.prompt_lookup) {
                (Some(path), _) => Speculation::DraftModel(path),
                (None, Some(true)) => Speculation::PromptLookup,
                (None, _) => Speculation::Off,
            },
            template: overrides.template,
            budget,
            index_workspace: overrides.index_workspace.unwrap_or(true),
            prefetch: overrides.prefetch.unwrap_or(true),
            // llama.cpp caps the count at the model's layers.
            gpu_layers: overrides.gpu_layers.unwrap_or(if GPU_BACKEND.is_some() {
                u32::MAX
            } else {
                0
            }),
        };
        (settings, problems)
    }

    /// These settings for a context of `context_size` tokens (the engine's, which
    /// the model or the memory may have made smaller than configured): the answer
    /// and the prompt's parts shrink to their shares of it, as in [`Settings::resolve`].
    pub fn fit_context(self, context_size: u32) -> Settings {
        let share = |value: usize, divisor: u32| value.min((context_size / divisor) as usize);
        Settings {
            context_size,
            max_tokens: self.max_tokens.min(context_size / 4).max(1),
            budget: Budget {
                prefix_tokens: share(self.budget.prefix_tokens, 2).max(1),
                suffix_tokens: share(self.budget.suffix_tokens, 8),
                extra_tokens: share(self.budget.extra_tokens, 8),
            },
            ..self
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
        let (settings, problems) = Settings::resolve(flags.overridden_by(client));
        assert!(problems.is_empty(), "{problems:?}");
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
        let (settings, problems) = Settings::resolve(Overrides::default());
        assert!(problems.is_empty(), "{problems:?}");
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
        assert_eq!(Settings::resolve(no_limit).0.time_limits.prompt, None);
        let draft = Overrides::from_json(Some(json!({"draftModel": "/d.gguf"}))).unwrap();
        assert_eq!(
            Settings::resolve(draft).0.speculation,
            Speculation::DraftModel("/d.gguf".into())
        );
    }

    #[test]
    fn absurd_values_are_bounded_and_named() {
        let absurd = Overrides::from_json(Some(json!({
            "contextSize": 1,
            "threads": 100000,
            "prefixTokens": 4294967295u32,
            "suffixTokens": 4294967295u32,
            "extraTokens": 4294967295u32,
            "warmStates": 100000,
            "generationTimeLimitMs": 1_000_000_000_000u64,
        })))
        .unwrap();
        let (settings, problems) = Settings::resolve(absurd);
        assert_eq!(settings.context_size, MIN_CONTEXT_SIZE);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        assert_eq!(settings.threads, cores);
        assert_eq!(settings.budget.prefix_tokens, MIN_CONTEXT_SIZE as usize / 2);
        assert_eq!(settings.budget.suffix_tokens, MIN_CONTEXT_SIZE as usize / 8);
        assert_eq!(settings.warm_states, MAX_WARM_STATES);
        assert_eq!(
            settings.time_limits.generation.as_millis() as u64,
            MAX_TIME_LIMIT_MS
        );
        let named = |name: &str| problems.iter().any(|p| p.starts_with(&format!("`{name}`")));
        for name in [
            "contextSize",
            "threads",
            "prefixTokens",
            "suffixTokens",
            "extraTokens",
            "warmStates",
            "generationTimeLimitMs",
        ] {
            assert!(named(name), "{name} not reported in {problems:?}");
        }
        assert!(problems[0].contains("512–131072"), "{}", problems[0]);
        // Unset options that do not fit a small context shrink without a word.
        let small = Overrides::from_json(Some(json!({"contextSize": 512}))).unwrap();
        let (settings, problems) = Settings::resolve(small);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.budget.prefix_tokens, 256);
        let huge = Overrides::from_json(Some(json!({"contextSize": 1_000_000_000}))).unwrap();
        assert_eq!(Settings::resolve(huge).0.context_size, MAX_CONTEXT_SIZE);
        // A context the engine had to make smaller keeps the same shares.
        let fitted = Settings::resolve(Overrides::default()).0.fit_context(1024);
        assert_eq!(fitted.context_size, 1024);
        assert_eq!(fitted.budget.prefix_tokens, 512);
        assert_eq!(fitted.budget.suffix_tokens, 128);
        assert_eq!(fitted.budget.extra_tokens, 128);
        assert_eq!(fitted.max_tokens, 128);
    }
}
