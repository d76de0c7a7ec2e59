//! Settings: defaults, overridden by command-line flags, overridden by the
//! client's `initializationOptions`.
//!
//! The editor's configuration is the one a user edits most often, so it wins over
//! the flags that the editor integration put on the command line.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;

use crate::postprocess;

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
}

/// Default context size: room for a ~1.5k-token prompt and its answer, with margin.
pub const DEFAULT_CONTEXT_SIZE: u32 = 4096;
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
    }
}
