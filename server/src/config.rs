//! Settings: defaults, overridden by command-line flags, overridden by the
//! client's `initializationOptions`, overridden by the settings of its latest
//! `workspace/didChangeConfiguration`.
//!
//! The editor's configuration is the one a user edits most often, so it wins over
//! the flags that the editor integration put on the command line; what the user
//! changed while the editor runs wins over what it started with.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use inkling_core::candidates::MAX_CANDIDATES;
use inkling_core::postprocess::{self, Trigger};
use inkling_core::prompt::Budget;
use inkling_core::template;
use inkling_core::workspace::{self, DisabledFiles};
use inkling_engine::options::{
    EngineOptions, GPU_BACKEND, MAX_CONTEXT_SIZE, MIN_CONTEXT_SIZE, Speculation,
};
use inkling_remote::config::RemoteConfig;

/// Everything the server can be told, each option declared once: its doc comment
/// (the `--help` text, ending in its default), its command-line flag (the field's
/// name in kebab case) and its `initializationOptions` key (in camel case) come from
/// the field; README's table of options is checked against it by a test. All
/// fields are optional so that one layer can override another field by field;
/// [`Settings`] fills the gaps with defaults.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::Args)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overrides {
    /// GGUF model to load: a path, or a name `inkling models` lists (`ollama:NAME[:TAG]`,
    /// `lmstudio:PUBLISHER/REPO[/FILE]`, `hf:ORG/REPO[/FILE]`) [default: Gemma-3-270M,
    /// fetched once into the cache]
    #[arg(long, value_name = "PATH|NAME", global = true, value_parser = utf8_path)]
    pub model: Option<PathBuf>,
    /// Context size of the model in tokens [default: 4096]
    #[arg(long, visible_alias = "ctx-size", value_name = "TOKENS")]
    pub context_size: Option<NonZeroU32>,
    /// Threads for the model [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<NonZeroU32>,
    /// Most tokens generated per completion; automatic requests also stop at their
    /// time limit [default: 128]
    #[arg(long, value_name = "TOKENS")]
    pub max_tokens: Option<NonZeroU32>,
    /// Apply the full stop rules and filters; `false` keeps only the basic stop rules
    /// (for comparison) [default: true]
    #[arg(long, value_name = "BOOL")]
    pub postprocess: Option<bool>,
    /// Automatic requests suggest inside comments too (an invoked
    /// request is answered there either way) [default: true]
    #[arg(long, value_name = "BOOL")]
    pub comment_completions: Option<bool>,
    /// Automatic requests in a line already begun end before the first token the
    /// model is unsure of: the suggestion is what it is sure of, and accepting it
    /// asks for the rest [default: true]
    #[arg(long, value_name = "BOOL")]
    pub stop_when_unsure: Option<bool>,
    /// Also serve the HTTP endpoint (`/v1/completions`, `/infill`) on 127.0.0.1 at
    /// this port [default: none]
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Send `inkling/partialCompletion` notifications while generating [default: false]
    #[arg(long, value_name = "BOOL")]
    pub stream_partial: Option<bool>,
    /// Automatic requests stop decoding the prompt after this long and answer
    /// nothing; what was decoded stays cached, so the next keystroke carries on (0:
    /// no limit) [default: 500]
    #[arg(long, value_name = "MS")]
    pub prompt_time_limit_ms: Option<u64>,
    /// Automatic requests stop generating after this long and answer what they
    /// have; invoked ones get 3× as long [default: 1000]
    #[arg(long, value_name = "MS")]
    pub generation_time_limit_ms: Option<u64>,
    /// Documents whose KV cache is kept (the others' are saved and restored when you
    /// switch back) [default: 4]
    #[arg(long, value_name = "N")]
    pub warm_states: Option<NonZeroU32>,
    /// Speculative decoding with drafts from n-gram matches in the prompt (slower on
    /// a 2-core CPU: see README's benchmarks) [default: false]
    #[arg(long, value_name = "BOOL")]
    pub prompt_lookup: Option<bool>,
    /// A smaller GGUF with the same vocabulary that drafts tokens instead [default: none]
    #[arg(long, value_name = "PATH|NAME", value_parser = utf8_path)]
    pub draft_model: Option<PathBuf>,
    /// The prompt layout: `auto` (detected from the model's vocabulary),
    /// `prefix-only`, `qwen`, `starcoder`, `codellama`, `deepseek`, `codestral`,
    /// `codegemma`, or your own with `{prefix}` and `{suffix}` and special tokens
    /// spelled out [default: auto]
    #[arg(long, value_name = "TEMPLATE", global = true, value_parser = checked_template)]
    pub template: Option<String>,
    /// Most tokens of the window before the cursor (in the loaded model's tokens)
    /// [default: 768]
    #[arg(long, value_name = "TOKENS")]
    pub prefix_tokens: Option<u32>,
    /// Most tokens after the cursor (FIM models; kept short because in
    /// prefix-suffix-middle order they are decoded again on every keystroke)
    /// [default: 128]
    #[arg(long, value_name = "TOKENS")]
    pub suffix_tokens: Option<u32>,
    /// Most tokens of the outline and other files' material; 0 turns both off
    /// [default: 256]
    #[arg(long, value_name = "TOKENS")]
    pub extra_tokens: Option<u32>,
    /// Index the workspace's files in the background for the signatures code refers
    /// to [default: true]
    #[arg(long, value_name = "BOOL")]
    pub index_workspace: Option<bool>,
    /// After showing a suggestion, compute the next one as if it were accepted (in
    /// the background, stopped as soon as a request needs the model), so accepting
    /// and asking again is answered from memory [default: true]
    #[arg(long, value_name = "BOOL")]
    pub prefetch: Option<bool>,
    /// Items an invoked request offers, best first (1–3; the others begin with the
    /// model's next most likely first tokens); automatic requests offer one [default: 3]
    #[arg(long, value_name = "N")]
    pub candidates: Option<u32>,
    /// Order an invoked request's candidates by how likely the model finds the rest
    /// of the line and the next three non-blank lines after each, within its time
    /// limit [default: false]
    #[arg(long, value_name = "BOOL")]
    pub suffix_rescoring: Option<bool>,
    /// On a blank line, start a one-line candidate with each name (at most two) the
    /// code below reads that nothing above it in the function defines, and offer a
    /// candidate that defines one first (invoked and automatic requests) [default: true]
    #[arg(long, value_name = "BOOL")]
    pub unbound_names: Option<bool>,
    /// Layers offloaded to the GPU; needs a build with a GPU backend (see README's
    /// build section) [default: all (GPU builds), 0 (CPU builds)]
    #[arg(long, value_name = "N")]
    pub gpu_layers: Option<u32>,
    /// Language ids (e.g. `markdown`, `plaintext`) whose documents get no
    /// suggestions and whose text is never shown to the model for other files;
    /// repeat the flag for more [default: none]
    #[arg(long, value_name = "ID", global = true)]
    pub disabled_languages: Option<Vec<String>>,
    /// Globs (e.g. `*.env`, `secrets/**`) matched against a file's path relative to
    /// the workspace root and its absolute path: matching files get no suggestions and
    /// their text is never shown to the model for other files; repeat the flag for
    /// more [default: none]
    #[arg(long, value_name = "GLOB", global = true)]
    pub disabled_paths: Option<Vec<PathGlob>>,
    /// A remote engine to escalate to, as a JSON object (`url`, `preset`, policy,
    /// timeouts: see README's section on remote engines); nothing leaves the
    /// machine without it, and by default only invoked requests go remote [default: none]
    #[arg(long, value_name = "JSON")]
    pub remote: Option<RemoteConfig>,
}

/// A glob of `disabledPaths`, checked when the settings are read (an invalid one is
/// an invalid setting, not a file silently left enabled).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathGlob(String);

impl TryFrom<String> for PathGlob {
    type Error = String;

    fn try_from(pattern: String) -> Result<PathGlob, String> {
        match workspace::path_glob(&pattern) {
            Ok(_) => Ok(PathGlob(pattern)),
            Err(e) => Err(format!("`{pattern}` is not a glob: {e}")),
        }
    }
}

impl std::str::FromStr for PathGlob {
    type Err = String;

    fn from_str(pattern: &str) -> Result<PathGlob, String> {
        PathGlob::try_from(pattern.to_owned())
    }
}

impl From<PathGlob> for String {
    fn from(glob: PathGlob) -> String {
        glob.0
    }
}

impl Overrides {
    /// Returns `self` with every field that `other` sets replaced by `other`'s value.
    pub fn overridden_by(self, other: Overrides) -> Overrides {
        // Field by field through their JSON form, so that no option is listed here.
        let as_map = |overrides: &Overrides| match serde_json::to_value(overrides) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let mut merged = as_map(&self);
        for (key, value) in as_map(&other) {
            if !value.is_null() {
                merged.insert(key, value);
            }
        }
        serde_json::from_value(serde_json::Value::Object(merged)).unwrap_or(other)
    }

    /// Parses the client's `initializationOptions`; `null` means no overrides.
    pub fn from_json(value: Option<serde_json::Value>) -> Result<Overrides, String> {
        Overrides::parse(value, "initializationOptions")
    }

    /// Parses the settings of `workspace/didChangeConfiguration` (or the answer to
    /// `workspace/configuration`): the options themselves, or nested under
    /// [`SETTINGS_SECTION`] as editors send their settings for one server (other
    /// servers' sections beside it are ignored); `null` means no overrides.
    pub fn from_settings(value: serde_json::Value) -> Result<Overrides, String> {
        let overrides = match value {
            serde_json::Value::Object(mut sections) if sections.contains_key(SETTINGS_SECTION) => {
                Overrides::parse(sections.remove(SETTINGS_SECTION), "settings")
            }
            value => Overrides::parse(Some(value), "settings"),
        }?;
        // Each glob was checked as it was read; the set as a whole may still be past
        // the matcher's limits. Refused here, the globs in use stay: files they keep
        // from the model are not let through (where none were in use, `resolve`
        // disables every file).
        if let Some(globs) = &overrides.disabled_paths {
            let patterns = globs.iter().cloned().map(String::from).collect();
            DisabledFiles::new(Vec::new(), patterns)
                .map_err(|e| format!("invalid settings: `disabledPaths`: {e}"))?;
        }
        Ok(overrides)
    }

    /// Parses options from `what` (named in the error).
    fn parse(value: Option<serde_json::Value>, what: &str) -> Result<Overrides, String> {
        match value {
            // Neovim encodes an empty Lua table `{}` as `[]`.
            None | Some(serde_json::Value::Null) => Ok(Overrides::default()),
            Some(serde_json::Value::Array(items)) if items.is_empty() => Ok(Overrides::default()),
            Some(value) => serde_json::from_value::<Overrides>(value.clone())
                .map_err(|e| {
                    // serde names an unknown key but not the key of a bad value: find it.
                    let named = value.as_object().and_then(|fields| {
                        fields.iter().find_map(|(key, field)| {
                            let alone = serde_json::json!({ key: field });
                            serde_json::from_value::<Overrides>(alone)
                                .err()
                                .map(|e| format!("`{key}`: {e}"))
                        })
                    });
                    format!("invalid {what}: {}", named.unwrap_or_else(|| e.to_string()))
                })
                .and_then(|overrides| {
                    if let Some(template) = &overrides.template {
                        checked_template(template)
                            .map_err(|e| format!("invalid {what}: `template`: {e}"))?;
                    }
                    Ok(overrides)
                }),
        }
    }
}

/// A path flag: clap refuses one that is not UTF-8, which the settings' JSON form
/// (how the layers merge, see [`Overrides::overridden_by`]) could not carry.
fn utf8_path(path: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(path))
}

/// `template` if the model does not matter to whether it can be used (see
/// [`template::check`]): a setting refused here leaves the model loaded as it was.
fn checked_template(template: &str) -> Result<String, String> {
    template::check(template)
        .map(|()| template.to_owned())
        .map_err(|e| e.to_string())
}

/// The section of the editor's settings that holds inkling's options.
pub const SETTINGS_SECTION: &str = "inkling";

/// The layers the settings are made of, each overriding the one before it field by
/// field: defaults, command-line flags, `initializationOptions`, and the latest
/// settings from `workspace/didChangeConfiguration` (which replace the previous
/// ones whole: an option they leave out falls back to the layers below).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layers {
    /// The flags with the `initializationOptions` over them: fixed for the session.
    pub started_with: Overrides,
    /// The latest settings the client sent while running.
    pub changed: Overrides,
}

impl Layers {
    /// The resolved settings of all layers (see [`Settings::resolve`]).
    pub fn resolve(&self) -> (Settings, Vec<String>) {
        Settings::resolve(
            self.started_with
                .clone()
                .overridden_by(self.changed.clone()),
        )
    }
}

/// Resolved settings, every value decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// What the in-process engine is told.
    pub engine: EngineOptions,
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
    /// Whether the workspace is indexed in the background.
    pub index_workspace: bool,
    /// Whether the answer after accepting a suggestion is prefetched.
    pub prefetch: bool,
    /// Items an invoked request offers (automatic requests offer one).
    pub candidates: u32,
    /// Whether an invoked request's candidates are ordered by the text after the cursor.
    pub suffix_rescoring: bool,
    /// Whether names the code below needs defined start candidates of their own.
    pub unbound_names: bool,
    /// Files that get no suggestions and are never material for other files.
    pub disabled: DisabledFiles,
    /// The remote engine, when one is configured (its settings checked).
    pub remote: Option<RemoteConfig>,
}

impl Settings {
    /// Whether the workspace's files are indexed: asked for, and the prompt has room
    /// for other files' material.
    pub fn indexes_workspace(&self) -> bool {
        self.index_workspace && self.engine.budget.extra_tokens > 0
    }
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
        let candidates = within(
            "candidates",
            overrides.candidates.is_some(),
            overrides
                .candidates
                .map_or(MAX_CANDIDATES as u64, u64::from),
            1,
            MAX_CANDIDATES as u64,
            "",
        ) as u32;
        let disabled = DisabledFiles::new(
            overrides.disabled_languages.unwrap_or_default(),
            overrides
                .disabled_paths
                .unwrap_or_default()
                .into_iter()
                .map(String::from)
                .collect(),
        )
        .unwrap_or_else(|e| {
            // Changed settings were checked whole when read (`from_settings`): only
            // flags and initialization options get here. Whatever the globs meant to
            // keep from the model stays from it: every file.
            problems.push(format!(
                "`disabledPaths` cannot be used ({e}); completions are off for every file"
            ));
            DisabledFiles::new(Vec::new(), vec!["**".into()]).unwrap_or_default()
        });
        if GPU_BACKEND.is_none() && overrides.gpu_layers.is_some_and(|n| n > 0) {
            problems.push(
                "`gpuLayers` has no effect: this build of inkling has no GPU backend (build it with `--features cuda`, `vulkan` or `metal`); the model runs on the CPU".into(),
            );
        }
        let engine = EngineOptions {
            model: overrides.model,
            context_size,
            threads,
            warm_states,
            speculation: match (overrides.draft_model, overrides.prompt_lookup) {
                (Some(path), _) => Speculation::DraftModel(path),
                (None, Some(true)) => Speculation::PromptLookup,
                (None, _) => Speculation::Off,
            },
            // `auto` is what no template says: detect it from the model.
            template: overrides.template.filter(|t| t != "auto"),
            budget,
            // llama.cpp caps the count at the model's layers.
            gpu_layers: overrides.gpu_layers.unwrap_or(if GPU_BACKEND.is_some() {
                u32::MAX
            } else {
                0
            }),
        };
        let settings = Settings {
            engine,
            max_tokens,
            postprocess: postprocess::Options {
                enabled: overrides.postprocess.unwrap_or(true),
                in_comments: overrides.comment_completions.unwrap_or(true),
                stop_when_unsure: overrides.stop_when_unsure.unwrap_or(true),
            },
            http_port: overrides.http_port,
            stream_partial: overrides.stream_partial.unwrap_or(false),
            time_limits: TimeLimits {
                prompt: (prompt_limit > 0).then(|| Duration::from_millis(prompt_limit)),
                generation: Duration::from_millis(generation_limit),
            },
            index_workspace: overrides.index_workspace.unwrap_or(true),
            prefetch: overrides.prefetch.unwrap_or(true),
            candidates,
            suffix_rescoring: overrides.suffix_rescoring.unwrap_or(false),
            unbound_names: overrides.unbound_names.unwrap_or(true),
            disabled,
            remote: overrides.remote.filter(|remote| match remote.resolve() {
                Ok(_) => true,
                Err(e) => {
                    problems.push(format!("{e}; no remote engine is used"));
                    false
                }
            }),
        };
        (settings, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Each declared option: its `initializationOptions` key, its flag and the
    /// default its doc comment names, read from the declaration through clap.
    fn declared() -> Vec<(String, String, String)> {
        use clap::Args;
        let command = Overrides::augment_args(clap::Command::new("inkling"));
        command
            .get_arguments()
            .map(|arg| {
                let id = arg.get_id().as_str();
                let mut key = String::new();
                let mut upper = false;
                for c in id.chars() {
                    match c {
                        '_' => upper = true,
                        c if upper => {
                            key.push(c.to_ascii_uppercase());
                            upper = false;
                        }
                        c => key.push(c),
                    }
                }
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                let default = help
                    .rsplit_once("[default: ")
                    .and_then(|(_, d)| d.strip_suffix(']'))
                    .unwrap_or_else(|| panic!("`{id}`'s doc names no default: {help}"))
                    .to_owned();
                let flag = format!("--{}", arg.get_long().expect("a long flag"));
                (key, flag, default)
            })
            .collect()
    }

    #[test]
    fn every_option_has_one_flag_and_one_key() {
        let declared = declared();
        let Value::Object(keys) = serde_json::to_value(Overrides::default()).unwrap() else {
            panic!("options are not an object");
        };
        let mut keys: Vec<&String> = keys.keys().collect();
        let mut names: Vec<&String> = declared.iter().map(|(key, _, _)| key).collect();
        keys.sort();
        names.sort();
        assert_eq!(keys, names);
        for (key, flag, _) in &declared {
            let kebab: String = key
                .chars()
                .flat_map(|c| {
                    let lower = c.to_ascii_lowercase();
                    (c.is_ascii_uppercase().then_some('-').into_iter()).chain([lower])
                })
                .collect();
            assert_eq!(*flag, format!("--{kebab}"));
        }
    }

    #[test]
    fn readme_lists_every_option_with_its_flag_and_default() {
        let readme = include_str!("../../README.md");
        let header = "| option | flag | default | what it does |";
        let table = readme
            .split_once(header)
            .expect("README has the table of options")
            .1;
        let rows: Vec<Vec<String>> = table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                line.trim_matches('|')
                    .split(" | ")
                    .map(|cell| cell.trim().trim_matches('`').to_owned())
                    .collect()
            })
            .collect();
        let declared = declared();
        for (key, flag, default) in &declared {
            let row = rows
                .iter()
                .find(|row| row[0] == *key)
                .unwrap_or_else(|| panic!("README has no row for `{key}`"));
            assert_eq!(row[1], *flag, "README's flag of `{key}`");
            assert_eq!(
                row[2].replace('`', ""),
                *default,
                "README's default of `{key}`"
            );
        }
        assert_eq!(
            rows.len(),
            declared.len(),
            "README lists options not declared"
        );
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        let defaults = Settings::resolve(Overrides::default()).0;
        let mut checked = 0;
        for (key, _, default) in declared() {
            // Defaults in words ("all cores", "Gemma-3-270M, …") are not values.
            let value = match serde_json::from_str::<Value>(&default) {
                Ok(value) => value,
                Err(_) if default == "none" => Value::Null,
                Err(_)
                    if default
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
                {
                    Value::String(default.clone())
                }
                Err(_) => continue,
            };
            let set = Overrides::from_json(Some(json!({ key.clone(): value }))).unwrap();
            let (settings, problems) = Settings::resolve(set);
            assert!(problems.is_empty(), "{key}: {problems:?}");
            assert_eq!(settings, defaults, "`{key}` = {default} is not the default");
            checked += 1;
        }
        assert!(checked >= 15, "only {checked} defaults checked");
    }

    #[test]
    fn a_path_flag_that_is_not_utf8_is_refused_rather_than_dropping_every_flag() {
        use clap::{Args, FromArgMatches};
        use std::os::unix::ffi::OsStringExt;
        let command = Overrides::augment_args(clap::Command::new("inkling"));
        let parse = |path: std::ffi::OsString| {
            let args = [
                "inkling".into(),
                "--model".into(),
                path,
                "--max-tokens".into(),
                "10".into(),
            ];
            let matches = command.clone().try_get_matches_from(args)?;
            Overrides::from_arg_matches(&matches)
        };
        assert!(parse(std::ffi::OsString::from_vec(b"/m/caf\xe9.gguf".to_vec())).is_err());
        let flags = parse("/m/café.gguf".into()).unwrap();
        let merged = flags.overridden_by(Overrides::default());
        assert_eq!(merged.model, Some(PathBuf::from("/m/café.gguf")));
        assert_eq!(merged.max_tokens, NonZeroU32::new(10));
    }

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
        assert_eq!(settings.engine.model, Some(PathBuf::from("/flag.gguf")));
        assert_eq!(settings.max_tokens, 20);
        assert_eq!(settings.engine.context_size, 1024);
    }

    #[test]
    fn settings_changed_while_running_override_the_layers_below_field_by_field() {
        let flags = Overrides {
            max_tokens: NonZeroU32::new(10),
            threads: NonZeroU32::new(1),
            ..Overrides::default()
        };
        let client =
            Overrides::from_json(Some(json!({"maxTokens": 20, "contextSize": 1024}))).unwrap();
        let mut layers = Layers {
            started_with: flags.overridden_by(client),
            changed: Overrides::default(),
        };
        let resolved = |layers: &Layers| {
            let (settings, problems) = layers.resolve();
            assert!(problems.is_empty(), "{problems:?}");
            (
                settings.max_tokens,
                settings.engine.context_size,
                settings.engine.threads,
            )
        };
        assert_eq!(resolved(&layers), (20, 1024, 1));
        // Nested under the section, beside other servers' sections, as editors send it.
        layers.changed =
            Overrides::from_settings(json!({"inkling": {"maxTokens": 30}, "pyright": {}})).unwrap();
        assert_eq!(resolved(&layers), (30, 1024, 1));
        // New settings replace the previous ones whole: `maxTokens` falls back.
        layers.changed = Overrides::from_settings(json!({"contextSize": 2048})).unwrap();
        assert_eq!(resolved(&layers), (20, 2048, 1));
        for nothing in [Value::Null, json!({}), json!([]), json!({"inkling": null})] {
            layers.changed = Overrides::from_settings(nothing).unwrap();
            assert_eq!(resolved(&layers), (20, 1024, 1));
        }
        assert_eq!(
            Overrides::from_settings(json!({"inkling": {"prefetch": false}})),
            Overrides::from_settings(json!({"prefetch": false}))
        );
        for (bad, named) in [
            (
                json!({"inkling": {"maxTokens": "many", "threads": 2}}),
                "invalid settings: `maxTokens`: invalid type",
            ),
            (json!({"modle": "x"}), "modle"),
            (
                json!({"disabledPaths": ["src/[a"]}),
                "`src/[a` is not a glob",
            ),
            (json!(5), "invalid settings"),
            // Each glob is valid; together they are past the matcher's limits.
            (
                json!({"disabledPaths": ["*.secret", "*".repeat(100_000)]}),
                "invalid settings: `disabledPaths`",
            ),
        ] {
            let error = Overrides::from_settings(bad).unwrap_err();
            assert!(error.contains(named), "{error}");
        }
    }

    #[test]
    fn disabled_files_come_from_languages_and_globs() {
        let set = Overrides::from_json(Some(json!({
            "disabledLanguages": ["markdown", "plaintext"],
            "disabledPaths": ["*.env", "secrets/**"],
        })))
        .unwrap();
        let disabled = Settings::resolve(set).0.disabled;
        assert!(disabled.language("markdown") && disabled.language("plaintext"));
        assert!(!disabled.language("python"));
        assert!(disabled.path("deploy/prod.env") && disabled.path("secrets/db/key.py"));
        assert!(!disabled.path("src/main.py"));
        // Flags whose globs the matcher cannot take keep every file from the model.
        let too_large = Overrides {
            disabled_paths: Some(vec![PathGlob::try_from("*".repeat(100_000)).unwrap()]),
            ..Overrides::default()
        };
        let (settings, problems) = Settings::resolve(too_large);
        assert!(settings.disabled.path("src/main.py"), "{problems:?}");
        assert!(problems[0].contains("off for every file"), "{problems:?}");
        assert!(
            Settings::resolve(Overrides::default())
                .0
                .disabled
                .is_empty()
        );
        // On the command line: the flag repeated.
        use clap::{Args, FromArgMatches};
        let matches = Overrides::augment_args(clap::Command::new("inkling"))
            .try_get_matches_from([
                "inkling",
                "--disabled-paths",
                "*.env",
                "--disabled-paths",
                "secrets/**",
                "--disabled-languages",
                "markdown",
            ])
            .unwrap();
        let flags = Overrides::from_arg_matches(&matches).unwrap();
        assert_eq!(
            Settings::resolve(flags).0.disabled,
            disabled_of(&["markdown"], &["*.env", "secrets/**"])
        );
        assert!(
            Overrides::augment_args(clap::Command::new("inkling"))
                .try_get_matches_from(["inkling", "--disabled-paths", "a{b"])
                .is_err()
        );
    }

    fn disabled_of(languages: &[&str], patterns: &[&str]) -> DisabledFiles {
        let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        DisabledFiles::new(owned(languages), owned(patterns)).unwrap()
    }

    #[test]
    fn a_template_no_model_can_take_is_refused_before_any_reload() {
        for bad in [
            "{prefix}{prefix}",
            "<nope>",
            "no placeholders",
            "{prefix}{suffix}{suffix}",
        ] {
            let error = Overrides::from_json(Some(json!({ "template": bad }))).unwrap_err();
            assert!(error.contains("`template`"), "{error}");
        }
        for good in [
            "auto",
            "prefix-only",
            "qwen",
            "<pre>{prefix}<suf>{suffix}<mid>",
        ] {
            let parsed = Overrides::from_settings(json!({ "template": good })).unwrap();
            assert_eq!(parsed.template.as_deref(), Some(good));
        }
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
        assert_eq!(settings.engine.context_size, DEFAULT_CONTEXT_SIZE);
        assert_eq!(settings.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(settings.engine.threads >= 1);
        assert_eq!(settings.engine.warm_states, DEFAULT_WARM_STATES);
        assert_eq!(settings.engine.speculation, Speculation::Off);
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
            Settings::resolve(draft).0.engine.speculation,
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
        assert_eq!(settings.engine.context_size, MIN_CONTEXT_SIZE);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        assert_eq!(settings.engine.threads, cores);
        assert_eq!(
            settings.engine.budget.prefix_tokens,
            MIN_CONTEXT_SIZE as usize / 2
        );
        assert_eq!(
            settings.engine.budget.suffix_tokens,
            MIN_CONTEXT_SIZE as usize / 8
        );
        assert_eq!(settings.engine.warm_states, MAX_WARM_STATES);
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
        assert_eq!(settings.engine.budget.prefix_tokens, 256);
        let huge = Overrides::from_json(Some(json!({"contextSize": 1_000_000_000}))).unwrap();
        assert_eq!(
            Settings::resolve(huge).0.engine.context_size,
            MAX_CONTEXT_SIZE
        );
        // A context the engine had to make smaller keeps the same shares.
        let fitted = Settings::resolve(Overrides::default())
            .0
            .engine
            .fit_context(1024);
        assert_eq!(fitted.context_size, 1024);
        assert_eq!(fitted.budget.prefix_tokens, 512);
        assert_eq!(fitted.budget.suffix_tokens, 128);
        assert_eq!(fitted.budget.extra_tokens, 128);
    }
}
