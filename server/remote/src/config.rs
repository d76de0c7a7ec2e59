//! The remote engine's settings, as the user writes them (`remote` in
//! `initializationOptions`, or `--remote JSON`), and their resolved form.
//!
//! Nothing is sent anywhere unless a `url` is configured; by default only invoked
//! requests go remote.

use std::path::PathBuf;
use std::time::Duration;

use inkling_core::template::FimText;
use inkling_core::workspace::DisabledFiles;
use serde::{Deserialize, Serialize};

/// A remote engine as configured: every field but `url` optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteConfig {
    /// Base URL of the server (`http://host:port`); the format adds its path.
    pub url: String,
    /// Vendor defaults: `llama-server`, `vllm`, `sglang`, `ollama`, `lmstudio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Wire format, overriding the preset's: `infill`, `openai`, `ollama`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Model name sent with `openai` and `ollama` requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// FIM family for raw prompts (`qwen`, `starcoder`, `codellama`, `deepseek`,
    /// `codestral`, `codegemma`); without one, `openai` sends `suffix` and `ollama`
    /// the prefix alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Name of the environment variable holding the API key (sent as a bearer token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Which requests may go remote: `invoked` (default) or `all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    /// `any` (default), `single` or `multi`: which kinds of completion may go remote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Lines>,
    /// Language ids that may go remote (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub languages: Option<Vec<String>>,
    /// Workspace folders (absolute paths) whose files may go remote (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Vec<String>>,
    /// Path globs whose files never go remote, whatever else is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_paths: Option<Vec<String>>,
    /// Start the local engine too when the remote has no first token after this long
    /// (default: the remote's measured p90 time to first token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedge_delay_ms: Option<u64>,
    /// Connection timeout (default 500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// First-token timeout (default 2000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_timeout_ms: Option<u64>,
    /// Whole-request timeout (default 5000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_timeout_ms: Option<u64>,
    /// Consecutive failures that open the circuit breaker (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_failures: Option<u32>,
    /// How long an open breaker sends everything local (default 30000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_open_ms: Option<u64>,
    /// Header carrying a stable key for cache-aware routers (e.g. `X-Session-ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_header: Option<String>,
    /// What the affinity key is stable for: `document` (default) or `workspace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// llama-server's slot count: with it, `id_slot` is derived from the document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Append a line per request sent (time, URL, path, bytes; never code) to this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
}

impl std::str::FromStr for RemoteConfig {
    type Err = String;

    /// The command-line form: the same JSON object as in `initializationOptions`.
    fn from_str(json: &str) -> Result<RemoteConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }
}

/// Vendor defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// llama.cpp's `llama-server`: `/infill`.
    LlamaServer,
    /// vLLM: `/v1/completions` with a raw FIM prompt (it refuses `suffix`).
    Vllm,
    /// SGLang: `/v1/completions` with a raw FIM prompt.
    Sglang,
    /// Ollama: `/api/generate`, `raw: true`.
    Ollama,
    /// LM Studio: `/v1/completions` with a raw FIM prompt.
    Lmstudio,
}

/// How requests and streamed answers are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// llama.cpp `POST /infill`, server-sent events.
    Infill,
    /// `POST /v1/completions`, server-sent events.
    Openai,
    /// Ollama `POST /api/generate`, newline-delimited JSON.
    Ollama,
}

impl Format {
    /// The path requests go to.
    pub fn path(self) -> &'static str {
        match self {
            Format::Infill => "/infill",
            Format::Openai => "/v1/completions",
            Format::Ollama => "/api/generate",
        }
    }
}

/// Which triggers may go remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Triggers {
    /// Only requests the user asked for.
    Invoked,
    /// Automatic ones too.
    All,
}

/// Which completions may go remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lines {
    /// Every completion.
    Any,
    /// Single-line completions only.
    Single,
    /// Multi-line completions only.
    Multi,
}

/// What the affinity key stays the same for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// One key per document.
    Document,
    /// One key per workspace.
    Workspace,
}

/// The settings decided: defaults filled in, globs compiled, the template found.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The endpoint requests go to (base URL + the format's path).
    pub endpoint: String,
    /// The endpoint as logs, stats, messages and the audit log show it: a value in
    /// its query long enough to be a key (see [`Resolved::query_secrets`]) hidden.
    pub shown_endpoint: String,
    /// The wire format.
    pub format: Format,
    /// The model name, when one is sent.
    pub model: Option<String>,
    /// Raw FIM layout, when prompts are sent laid out.
    pub fim: Option<FimText>,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Whether automatic requests may go remote.
    pub automatic: bool,
    /// Which completions may go remote.
    pub lines: Lines,
    /// Languages that may go remote; empty: all.
    pub languages: Vec<String>,
    /// Workspace folders that may go remote; empty: all.
    pub workspaces: Vec<String>,
    /// Paths that never go remote.
    pub deny: DisabledFiles,
    /// A fixed hedge delay; `None` adapts it to the remote.
    pub hedge_delay: Option<Duration>,
    /// Timeouts.
    pub connect_timeout: Duration,
    /// See [`RemoteConfig::first_token_timeout_ms`].
    pub first_token_timeout: Duration,
    /// See [`RemoteConfig::total_timeout_ms`].
    pub total_timeout: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open.
    pub breaker_open: Duration,
    /// The affinity header's name, if one is sent.
    pub affinity_header: Option<String>,
    /// What the affinity key is stable for.
    pub affinity: Affinity,
    /// Slot count for `id_slot`.
    pub slots: Option<u32>,
    /// The audit log's file.
    pub audit_log: Option<PathBuf>,
}

/// Whether a value in the endpoint's query may be a key (`?key=…`, `?token=…`): long
/// enough that hiding it hides no ordinary parameter (`?v=2`).
fn is_query_secret(value: &str) -> bool {
    value.chars().count() >= 8
}

impl Resolved {
    /// The values in the endpoint's query that may be keys, decoded and as sent
    /// (percent-encoded): no failure text shows them.
    pub fn query_secrets(&self) -> Vec<String> {
        let Ok(url) = reqwest::Url::parse(&self.endpoint) else {
            return Vec::new();
        };
        let decoded = url.query_pairs().map(|(_, value)| value.into_owned());
        let sent = url
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('=').map(|(_, value)| value.to_owned()));
        let mut secrets: Vec<String> = decoded
            .chain(sent)
            .filter(|value| is_query_secret(value))
            .collect();
        secrets.sort();
        secrets.dedup();
        secrets
    }
}

/// The longest any of the remote's timeouts may be, in ms.
const MAX_TIMEOUT_MS: u64 = 60_000;

impl RemoteConfig {
    /// The settings decided, or why they cannot be used.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let url = self.url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "`remote.url` must start with http:// or https://, not `{url}`"
            ));
        }
        let parsed =
            reqwest::Url::parse(url).map_err(|e| format!("`remote.url` is not a URL: {e}"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // It would be shown in logs, `inkling/stats` and the audit log.
            return Err("`remote.url` must not hold a user name or password: name the variable holding the key in `apiKeyEnv`".into());
        }
        if parsed.port() == Some(0) {
            return Err("`remote.url` names port 0, where no server listens".into());
        }
        let format = self.format.unwrap_or(match self.preset {
            Some(Preset::LlamaServer) | None => Format::Infill,
            Some(Preset::Ollama) => Format::Ollama,
            Some(Preset::Vllm | Preset::Sglang | Preset::Lmstudio) => Format::Openai,
        });
        let fim = match self.template.as_deref() {
            None => None,
            Some(name) => Some(FimText::of(name).ok_or_else(|| {
                format!("`remote.template`: `{name}` is not a FIM family inkling knows")
            })?),
        };
        // vLLM, SGLang and LM Studio refuse or ignore `suffix`: they need a layout.
        if fim.is_none()
            && matches!(
                self.preset,
                Some(Preset::Vllm | Preset::Sglang | Preset::Lmstudio)
            )
        {
            return Err("`remote.template` is needed with this preset (the server refuses `suffix`): name the model's FIM family, e.g. `qwen`".into());
        }
        if let Some(folder) = self
            .workspaces
            .iter()
            .flatten()
            .find(|folder| !folder.starts_with('/'))
        {
            return Err(format!(
                "`remote.workspaces`: `{folder}` is not an absolute folder"
            ));
        }
        let deny = DisabledFiles::new(Vec::new(), self.deny_paths.clone().unwrap_or_default())
            .map_err(|e| format!("`remote.denyPaths`: {e}"))?;
        // Out of range is refused, not bent: a wait the user did not mean is worse.
        let ms = |name: &str, value: Option<u64>, default: u64, least: u64| match value {
            None => Ok(Duration::from_millis(default)),
            Some(ms) if (least..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(ms) => Err(format!(
                "`remote.{name}` is {ms}: it must be {least} to {MAX_TIMEOUT_MS}"
            )),
        };
        if self.breaker_failures == Some(0) {
            return Err("`remote.breakerFailures` must be at least 1".into());
        }
        let audit_log = match &self.audit_log {
            Some(path) if path.as_os_str().is_empty() => {
                return Err("`remote.auditLog` is empty: name a file".into());
            }
            // A FIFO or a device would block or swallow the writes.
            Some(path) if path.exists() && !path.is_file() => {
                return Err(format!(
                    "`remote.auditLog` {} is not a regular file",
                    path.display()
                ));
            }
            path => path.clone(),
        };
        // The format's path after the URL's own, before any query.
        let mut endpoint = parsed;
        endpoint.set_path(&format!(
            "{}{}",
            endpoint.path().trim_end_matches('/'),
            format.path()
        ));
        let mut shown = endpoint.clone();
        if endpoint.query().is_some() {
            let pairs: Vec<(String, String)> = endpoint
                .query_pairs()
                .map(|(name, value)| {
                    let value = if is_query_secret(&value) {
                        "hidden".into()
                    } else {
                        value
                    };
                    (name.into_owned(), value.into_owned())
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        Ok(Resolved {
            endpoint: endpoint.to_string(),
            shown_endpoint: shown.to_string(),
            format,
            model: self.model.clone(),
            fim,
            api_key_env: self.api_key_env.clone(),
            automatic: self.triggers == Some(Triggers::All),
            lines: self.lines.unwrap_or(Lines::Any),
            languages: self.languages.clone().unwrap_or_default(),
            workspaces: self.workspaces.clone().unwrap_or_default(),
            deny,
            hedge_delay: match self.hedge_delay_ms {
                None => None,
                Some(delay) => Some(ms("hedgeDelayMs", Some(delay), 0, 0)?),
            },
            connect_timeout: ms("connectTimeoutMs", self.connect_timeout_ms, 500, 1)?,
            first_token_timeout: ms("firstTokenTimeoutMs", self.first_token_timeout_ms, 2000, 1)?,
            total_timeout: ms("totalTimeoutMs", self.total_timeout_ms, 5000, 1)?,
            breaker_failures: self.breaker_failures.unwrap_or(3),
            breaker_open: ms("breakerOpenMs", self.breaker_open_ms, 30_000, 1)?,
            affinity_header: match self.affinity_header.as_deref() {
                None | Some("") => None,
                Some(name) => Some(
                    reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| {
                            format!("`remote.affinityHeader`: `{name}` is not an HTTP header name")
                        })?
                        .to_string(),
                ),
            },
            affinity: self.affinity.unwrap_or(Affinity::Document),
            slots: self.slots.filter(|&n| n > 0),
            audit_log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> RemoteConfig {
        json.parse().unwrap()
    }

    #[test]
    fn a_key_in_the_url_query_is_never_shown() {
        let keyed = config(r#"{"url": "http://h/?v=2&key=sk-12345678%2Babc", "format": "openai"}"#)
            .resolve()
            .unwrap();
        assert_eq!(
            keyed.endpoint,
            "http://h/v1/completions?v=2&key=sk-12345678%2Babc"
        );
        assert_eq!(
            keyed.shown_endpoint,
            "http://h/v1/completions?v=2&key=hidden"
        );
        assert_eq!(
            keyed.query_secrets(),
            ["sk-12345678%2Babc", "sk-12345678+abc"]
        );
    }

    #[test]
    fn presets_choose_the_format_and_the_path() {
        let llama = config(r#"{"url": "http://h:8080/", "preset": "llama-server"}"#)
            .resolve()
            .unwrap();
        assert_eq!(llama.endpoint, "http://h:8080/infill");
        // The format's path goes before the URL's query, after its own path.
        let gateway = config(r#"{"url": "http://h:8080/team/?v=2", "format": "openai"}"#)
            .resolve()
            .unwrap();
        assert_eq!(gateway.endpoint, "http://h:8080/team/v1/completions?v=2");
        assert_eq!(gateway.shown_endpoint, gateway.endpoint);
        assert!(gateway.query_secrets().is_empty());
        assert!(!llama.automatic);
        let ollama = config(r#"{"url": "http://h:11434", "preset": "ollama", "template": "qwen"}"#)
            .resolve()
            .unwrap();
        assert_eq!(
            (ollama.format, ollama.endpoint.as_str()),
            (Format::Ollama, "http://h:11434/api/generate")
        );
        let vllm = config(
            r#"{"url": "https://h", "preset": "vllm", "template": "starcoder", "triggers": "all"}"#,
        )
        .resolve()
        .unwrap();
        assert_eq!(vllm.format, Format::Openai);
        assert_eq!(vllm.fim.unwrap().prefix, "<fim_prefix>");
        assert!(vllm.automatic);
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        assert!(
            config(r#"{"url": "h:1"}"#)
                .resolve()
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            config(r#"{"url": "http://h", "preset": "vllm"}"#)
                .resolve()
                .unwrap_err()
                .contains("template")
        );
        assert!(
            config(r#"{"url": "http://h", "preset": "lmstudio"}"#)
                .resolve()
                .unwrap_err()
                .contains("template")
        );
        assert!(
            config(r#"{"url": "http://[::1"}"#)
                .resolve()
                .unwrap_err()
                .contains("remote.url")
        );
        for (field, refused) in [
            (
                "totalTimeoutMs",
                r#""totalTimeoutMs": 18446744073709551615"#,
            ),
            ("hedgeDelayMs", r#""hedgeDelayMs": 60001"#),
            ("connectTimeoutMs", r#""connectTimeoutMs": 0"#),
            ("breakerFailures", r#""breakerFailures": 0"#),
            ("auditLog", r#""auditLog": "/dev/null""#),
            ("auditLog", r#""auditLog": """#),
            ("workspaces", r#""workspaces": ["src"]"#),
        ] {
            let error = config(&format!(r#"{{"url": "http://h", {refused}}}"#))
                .resolve()
                .unwrap_err();
            assert!(error.contains(field), "{refused}: {error}");
        }
        assert!(
            config(r#"{"url": "http://h", "hedgeDelayMs": 0}"#)
                .resolve()
                .is_ok()
        );
        let with_password = config(r#"{"url": "http://me:hunter2@h:8080"}"#)
            .resolve()
            .unwrap_err();
        assert!(
            with_password.contains("apiKeyEnv") && !with_password.contains("hunter2"),
            "{with_password}"
        );
        assert!(
            config(r#"{"url": "http://127.0.0.1:0"}"#)
                .resolve()
                .unwrap_err()
                .contains("port 0")
        );
        assert!(
            config(r#"{"url": "http://h", "affinityHeader": "X Session"}"#)
                .resolve()
                .unwrap_err()
                .contains("affinityHeader")
        );
        assert!(
            config(r#"{"url": "http://h", "template": "gpt"}"#)
                .resolve()
                .is_err()
        );
        assert!(
            config(r#"{"url": "http://h", "denyPaths": ["a/{b"]}"#)
                .resolve()
                .is_err()
        );
        assert!(
            "{\"url\": \"http://h\", \"apiKey\": \"k\"}"
                .parse::<RemoteConfig>()
                .is_err()
        );
    }
}
