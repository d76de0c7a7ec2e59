//! One streamed request to the remote: body, headers (API key, affinity), the
//! timeouts (connect, first token, total), at most one reconnect before the first
//! byte, and the stream read event by event with our stop rules applied as it
//! grows — so the request is dropped as soon as the answer is complete.

use std::future::Future;
use std::io::Write;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use inkling_core::generate::{CancelFlag, CompletionRequest, Generation, StopReason};
use tokio::sync::watch;

use crate::config::{Affinity, Format, Resolved};
use crate::format::{self, stable_hash};
use crate::policy::document_path;
use inkling_core::workspace::file_path;

/// Why a remote request gave no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection (refused, reset before an answer, DNS).
    Connect(String),
    /// An error status, with the start of its body.
    Status(u16, String),
    /// No first token within the first-token timeout.
    FirstTokenTimeout,
    /// No first token before the local engine, started after a configured hedge
    /// delay, had its whole answer: a remote that stalls (or cannot beat local) is
    /// skipped for a while like a failing one, instead of costing every request the
    /// hedge delay.
    Outrun,
    /// An event that is not the format's JSON.
    Malformed(String),
    /// The stream ended (or broke) before the server said the answer was complete.
    Truncated(String),
    /// The request was cancelled.
    Cancelled,
    /// The server dropped the request for a newer one (another client's, say): no
    /// sign of an unhealthy server.
    Superseded,
    /// The request could not be made as configured (an API key variable not set, a
    /// key or header the HTTP client refuses).
    Misconfigured(String),
}

/// Words of an error answer that refuses one request for its size (vLLM's "maximum
/// context length", llama-server's "exceeds the available context size"), not the
/// configuration: the next, shorter request may well go through.
const TOO_LARGE: [&str; 6] = [
    "context length",
    "context size",
    "context window",
    "max_model_len",
    "too long",
    "too many tokens",
];

impl Failure {
    /// The failure with every `secret` in its text (an error body echoing the
    /// request's headers, say) replaced: as sent, trimmed (a header value the
    /// server read), JSON-escaped and percent-encoded (echoed in a body or a URL).
    fn redacted(self, secret: &str) -> Failure {
        let json = |key: &str| serde_json::to_string(key).unwrap_or_default();
        let percent = |key: &str| -> String {
            key.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let mut spellings: Vec<String> = [secret, secret.trim()]
            .into_iter()
            .flat_map(|key| {
                let json = json(key);
                let json = json[1..json.len().saturating_sub(1).max(1)].to_owned();
                [key.to_owned(), json, percent(key)]
            })
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first: a spelling inside another must not break its match.
        spellings.sort_by_key(|s| std::cmp::Reverse(s.len()));
        spellings.dedup();
        self.map_text(|mut text| {
            for spelling in &spellings {
                text = text.replace(spelling.as_str(), "[the API key]");
                text = text.replace(&spelling.to_lowercase(), "[the API key]");
                text = text.replace(&spelling.to_uppercase(), "[the API key]");
            }
            text
        })
    }

    /// The failure with its text cut to what a message shows.
    fn shortened(self) -> Failure {
        self.map_text(|text| text.chars().take(300).collect())
    }

    fn map_text(self, hide: impl Fn(String) -> String) -> Failure {
        match self {
            Failure::Connect(e) => Failure::Connect(hide(e)),
            Failure::Status(status, body) => Failure::Status(status, hide(body)),
            Failure::Malformed(e) => Failure::Malformed(hide(e)),
            Failure::Truncated(e) => Failure::Truncated(hide(e)),
            Failure::Misconfigured(e) => Failure::Misconfigured(hide(e)),
            other @ (Failure::FirstTokenTimeout
            | Failure::Outrun
            | Failure::Cancelled
            | Failure::Superseded) => other,
        }
    }

    /// A status that means the configuration is wrong (a field refused, a wrong
    /// path, key or model, a format the server does not implement, a redirect —
    /// never followed): retrying cannot help, the user must be told.
    pub fn is_configuration_mistake(&self) -> bool {
        match self {
            Failure::Misconfigured(_) => true,
            Failure::Status(status, _) => {
                matches!(status, 300..=499 | 501)
                    && !matches!(status, 408 | 429)
                    && !self.is_request_refused()
            }
            _ => false,
        }
    }

    /// A status that refuses this one request (too large for the server), said by a
    /// healthy server that answers others: no verdict on the remote, no mistake to
    /// report, the local engine answers it.
    pub fn is_request_refused(&self) -> bool {
        let Failure::Status(status, body) = self else {
            return false;
        };
        let body = body.to_lowercase();
        *status == 413
            || (matches!(status, 400 | 422) && TOO_LARGE.iter().any(|words| body.contains(words)))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Status(status, body) => write!(f, "status {status}: {body}"),
            Failure::FirstTokenTimeout => write!(f, "no first token in time"),
            Failure::Outrun => write!(f, "no first token before the local engine answered"),
            Failure::Malformed(e) => write!(f, "malformed stream: {e}"),
            Failure::Truncated(e) => write!(f, "the stream ended early: {e}"),
            Failure::Cancelled => write!(f, "cancelled"),
            Failure::Superseded => write!(f, "superseded at the server by a newer request"),
            Failure::Misconfigured(e) => write!(f, "{e}"),
        }
    }
}

/// A remote answer and its time to first token.
#[derive(Clone, Debug)]
pub struct Streamed {
    /// The text, before post-processing, as a local generation would be.
    pub generation: Generation,
    /// Time from sending to the first text.
    pub first_token: Duration,
}

/// The outcome of waiting for something with a deadline and a cancel flag.
enum Waited<T> {
    Done(T),
    TimedOut,
    Cancelled,
}

async fn wait<T>(
    work: impl Future<Output = T>,
    deadline: Instant,
    cancel: &CancelFlag,
) -> Waited<T> {
    let cancelled = async {
        while !cancel.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        value = work => Waited::Done(value),
        () = tokio::time::sleep_until(deadline.into()) => Waited::TimedOut,
        () = cancelled => Waited::Cancelled,
    }
}

/// The key a cache-aware router keeps a user's requests together by: of the
/// document, or of the workspace's folder on this machine (its name alone, the same
/// in every teammate's checkout, would send a whole team to one replica).
fn affinity_key(policy: &Resolved, request: &CompletionRequest) -> String {
    let absolute = document_path(&request.document);
    let relative = &request.context.preamble.path;
    // The folder is what the relative path leaves of the absolute one; a document
    // outside the workspace (or not a file) has none, and keys by itself.
    let folder = (!relative.is_empty())
        .then(|| absolute.strip_suffix(relative.as_str()))
        .flatten()
        .filter(|folder| folder.len() > 1 && folder.starts_with('/') && folder.ends_with('/'));
    let scope = match (policy.affinity, folder) {
        (Affinity::Workspace, Some(folder)) => folder,
        (Affinity::Document | Affinity::Workspace, _) => &request.document,
    };
    format!("inkling-{:016x}", stable_hash(scope))
}

/// Appends the audit line of a request (never its text). A request whose line
/// cannot be written is not sent: the log is to name every request that left.
fn audit(policy: &Resolved, request: &CompletionRequest, bytes: usize) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = &policy.audit_log else {
        return Ok(());
    };
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A file's path; for a request not from a file (the HTTP endpoint) the path
    // its client named, if any.
    let relative = &request.context.preamble.path;
    let file = match file_path(&request.document) {
        None if !relative.is_empty() => relative.clone(),
        _ => document_path(&request.document),
    };
    let line = serde_json::json!({
        "time": time,
        "url": policy.shown_endpoint,
        "path": file,
        "bytes": bytes,
    });
    // Non-blocking: a FIFO put there since the settings were read must not hold
    // the server; and only a regular file is written.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .and_then(|mut file| {
            if !file.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            // One write: lines of processes sharing the log do not interleave.
            file.write_all(format!("{line}\n").as_bytes())
        });
    written.map_err(|e| {
        Failure::Misconfigured(format!(
            "cannot write the audit log {} ({e}), and nothing is sent unaudited",
            path.display()
        ))
    })
}

type Events = Pin<Box<dyn Stream<Item = Result<String, String>> + Send>>;

/// Most bytes read of one answer (an answer is a few hundred tokens): a remote
/// that sends more, or a line without end, fails the request instead of filling
/// memory within its time limit.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Most bytes of answer per token asked for: far more than any tokenizer's longest
/// piece of code.
const MAX_TOKEN_BYTES: usize = 64;
/// Most bytes read of an error answer's body, whose start is quoted.
const MAX_ERROR_BODY_BYTES: usize = 4096;

/// `bytes` until they add up to more than `limit`, then an error.
fn bounded<S, B, E>(bytes: S, limit: usize) -> impl Stream<Item = Result<B, String>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut total = 0usize;
    bytes.map(move |chunk| {
        let chunk = chunk.map_err(|e| e.to_string())?;
        total += chunk.as_ref().len();
        if total > limit {
            return Err(format!("the answer is longer than {limit} bytes"));
        }
        Ok(chunk)
    })
}

/// The start of an error answer's body, as text.
async fn error_text(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut chunks = pin!(response.bytes_stream());
    while body.len() < MAX_ERROR_BODY_BYTES {
        match chunks.next().await {
            Some(Ok(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Newline-delimited JSON (Ollama) as a stream of lines.
fn lines<S, B, E>(bytes: S) -> Events
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let state = (Box::pin(bytes), Vec::new(), false);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut bytes, mut buffer, ended): (Pin<Box<S>>, Vec<u8>, bool)| async move {
            loop {
                if let Some(at) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=at).collect();
                    let line = String::from_utf8(line).map_err(|e| e.to_string());
                    return Some((line, (bytes, buffer, ended)));
                }
                if ended {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(chunk.as_ref()),
                    Some(Err(e)) => return Some((Err(e.to_string()), (bytes, buffer, true))),
                    None if buffer.is_empty() => return None,
                    None => {
                        let rest = String::from_utf8(std::mem::take(&mut buffer))
                            .map_err(|e| e.to_string());
                        return Some((rest, (bytes, buffer, true)));
                    }
                }
            }
        },
    ))
}

/// Sends `request` to the remote and reads its answer, telling `first_token` how
/// long the first text took when it arrives. Text goes to `request.partial` as it
/// grows; the request is dropped once the stop rules say the answer is complete. A
/// failure's text (the remote's own words among it) never holds the API key.
pub async fn stream(
    http: &reqwest::Client,
    policy: &Resolved,
    request: &CompletionRequest,
    first_token: &watch::Sender<Option<Duration>>,
) -> Result<Streamed, Failure> {
    let key = match &policy.api_key_env {
        None => None,
        Some(name) => Some(std::env::var(name).map_err(|_| {
            Failure::Misconfigured(format!(
                "the environment variable {name} (`remote.apiKeyEnv`) holds no API key"
            ))
        })?),
    };
    if let (Some(name), Some(key)) = (&policy.api_key_env, &key)
        && key.chars().any(char::is_control)
    {
        return Err(Failure::Misconfigured(format!(
            "the API key in {name} (`remote.apiKeyEnv`) holds a line break or another control character, which no HTTP header can carry"
        )));
    }
    exchange(http, policy, request, first_token, key.as_deref())
        .await
        .map_err(|failure| {
            // Redacted whole, then cut: a cut first could keep the start of a key.
            let secrets = key.iter().cloned().chain(policy.query_secrets());
            secrets
                .filter(|secret| !secret.trim().is_empty())
                .fold(failure, |failure, secret| failure.redacted(&secret))
                .shortened()
        })
}

async fn exchange(
    http: &reqwest::Client,
    policy: &Resolved,
    request: &CompletionRequest,
    first_token: &watch::Sender<Option<Duration>>,
    key: Option<&str>,
) -> Result<Streamed, Failure> {
    let started = Instant::now();
    let total_deadline = started + policy.total_timeout;
    let first_deadline = (started + policy.first_token_timeout).min(total_deadline);
    let cancel = &request.cancel;
    let body = serde_json::to_vec(&format::body(policy, request))
        .map_err(|e| Failure::Malformed(e.to_string()))?;
    let mut builder = http
        .post(&policy.endpoint)
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(key) = key {
        builder = builder.bearer_auth(key);
    }
    if let Some(header) = &policy.affinity_header {
        builder = builder.header(header.as_str(), affinity_key(policy, request));
    }
    // Built once: what the HTTP client refuses (a key with a line break) is a
    // mistake to report, not a connection that failed. Its error names no header
    // value, so no key.
    let prepared = builder
        .build()
        .map_err(|e| Failure::Misconfigured(format!("the request cannot be made: {e}")))?;
    let send = || {
        let mut copy = reqwest::Request::new(prepared.method().clone(), prepared.url().clone());
        *copy.headers_mut() = prepared.headers().clone();
        *copy.body_mut() = Some(body.clone().into());
        http.execute(copy)
    };
    let mut reconnected = false;
    let response = loop {
        audit(policy, request, body.len())?;
        match wait(send(), first_deadline, cancel).await {
            Waited::Done(Ok(response)) => break response,
            // One reconnect before the first byte: a pooled connection the server
            // closed meanwhile fails like this.
            Waited::Done(Err(e)) if !reconnected && (e.is_connect() || e.is_request()) => {
                reconnected = true;
                tracing::debug!("remote: reconnecting after {e}");
            }
            Waited::Done(Err(e)) => return Err(Failure::Connect(e.to_string())),
            Waited::TimedOut => return Err(Failure::FirstTokenTimeout),
            Waited::Cancelled => return Err(Failure::Cancelled),
        }
    };
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("somewhere else");
        return Err(Failure::Status(
            status.as_u16(),
            format!("it redirects to {to}, which inkling does not follow: set that URL"),
        ));
    }
    if !status.is_success() {
        let text = match wait(error_text(response), first_deadline, cancel).await {
            Waited::Done(text) => text,
            _ => String::new(),
        };
        if format::superseded(&text) {
            return Err(Failure::Superseded);
        }
        return Err(Failure::Status(status.as_u16(), text));
    }
    let mut events: Events = match policy.format {
        Format::Infill | Format::Openai => Box::pin(
            bounded(response.bytes_stream(), MAX_ANSWER_BYTES)
                .eventsource()
                .map(|event| event.map(|e| e.data).map_err(|e| e.to_string())),
        ),
        Format::Ollama => lines(bounded(response.bytes_stream(), MAX_ANSWER_BYTES)),
    };
    let mut text = String::new();
    // A remote that streams far past the tokens asked for is cut (each event's
    // stop-rule check reads the whole text).
    let most_bytes = request.max_tokens as usize * MAX_TOKEN_BYTES;
    let mut first: Option<Duration> = None;
    let mut first_text_at = started;
    let stop_reason = loop {
        let deadline = if first.is_some() {
            total_deadline
        } else {
            first_deadline.min(total_deadline)
        };
        let data = match wait(events.next(), deadline, cancel).await {
            Waited::Cancelled => return Err(Failure::Cancelled),
            Waited::TimedOut if first.is_none() => return Err(Failure::FirstTokenTimeout),
            Waited::TimedOut => break StopReason::TimeLimit,
            Waited::Done(None) => return Err(Failure::Truncated("no end of answer".into())),
            Waited::Done(Some(Err(e))) => return Err(Failure::Truncated(e)),
            Waited::Done(Some(Ok(data))) => data,
        };
        if data.trim().is_empty() {
            continue;
        }
        let chunk = format::parse_event(policy.format, &data).map_err(|e| {
            if format::superseded(&data) {
                Failure::Superseded
            } else {
                Failure::Malformed(e)
            }
        })?;
        text.push_str(&chunk.text);
        if first.is_none() && (!chunk.text.is_empty() || chunk.done) {
            first_text_at = Instant::now();
            first = Some(first_text_at - started);
            first_token.send_replace(first);
        }
        if !chunk.text.is_empty()
            && let Some(partial) = &request.partial
        {
            partial.send(&text);
        }
        if chunk.done {
            break if chunk.length {
                StopReason::TokenLimit
            } else {
                StopReason::EndOfGeneration
            };
        }
        if request.stop.end_of_answer(&text, false).is_some() {
            break StopReason::StopRule;
        }
        if text.len() >= most_bytes {
            break StopReason::TokenLimit;
        }
    };
    let first_token = first.unwrap_or_else(|| started.elapsed());
    Ok(Streamed {
        generation: Generation {
            text,
            prompt_tokens: 0,
            reused_tokens: 0,
            generated_tokens: 0,
            stop_reason,
            build_time: Duration::ZERO,
            prompt_time: first_token,
            generation_time: first_text_at.elapsed(),
            alternatives: Vec::new(),
            token_ends: Vec::new(),
            short_prompt: false,
        },
        first_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    #[tokio::test]
    async fn an_answer_longer_than_its_limit_ends_in_an_error() {
        let chunks: Vec<Result<Vec<u8>, String>> = vec![Ok(vec![b'x'; 6]), Ok(vec![b'y'; 6])];
        let read: Vec<_> = bounded(stream::iter(chunks), 10).collect().await;
        assert_eq!(read[0], Ok(vec![b'x'; 6]));
        assert!(
            read[1].as_ref().is_err_and(|e| e.contains("10 bytes")),
            "{read:?}"
        );
        // A line without end stops there too.
        let endless = stream::iter((0..100).map(|_| Ok::<_, String>(vec![b'z'; 1000])));
        let lines: Vec<_> = lines(bounded(endless, 10_000)).collect().await;
        assert_eq!(lines.len(), 1);
        assert!(lines[0].is_err(), "{lines:?}");
    }

    #[tokio::test]
    async fn ndjson_lines_are_split_across_chunks() {
        let chunks: Vec<Result<Vec<u8>, String>> = vec![
            Ok(b"{\"a\":1}\n{\"b\"".to_vec()),
            Ok(b":2}\n{\"c\":3}".to_vec()),
        ];
        let lines: Vec<_> = lines(stream::iter(chunks)).collect().await;
        assert_eq!(
            lines,
            vec![
                Ok("{\"a\":1}\n".to_owned()),
                Ok("{\"b\":2}\n".to_owned()),
                Ok("{\"c\":3}".to_owned())
            ]
        );
    }

    #[test]
    fn the_audit_log_records_where_and_how_much_never_the_code() {
        let log = std::env::temp_dir().join(format!("inkling-audit-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let config = format!(
            r#"{{"url": "http://h:1", "auditLog": {:?}}}"#,
            log.display().to_string()
        );
        let policy = config
            .parse::<crate::config::RemoteConfig>()
            .unwrap()
            .resolve()
            .unwrap();
        let mut request = crate::policy::tests::request(
            "file:///w/a.rs",
            inkling_core::postprocess::Trigger::Invoked,
            "\n}\n",
        );
        request.context.prefix = "let SECRET_TOKEN = 1;\n".into();
        audit(&policy, &request, 42).unwrap();
        audit(&policy, &request, 7).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["url"], "http://h:1/infill");
        assert_eq!(
            (lines[0]["path"].as_str(), lines[0]["bytes"].as_u64()),
            (Some("/w/a.rs"), Some(42))
        );
        assert!(lines[0]["time"].as_u64().unwrap() > 0);
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn only_client_errors_other_than_timeouts_rate_limits_and_sizes_are_mistakes() {
        let status = |code, body: &str| Failure::Status(code, body.into());
        let suffix = r#"{"error": {"message": "suffix is not currently supported"}}"#;
        assert!(status(400, suffix).is_configuration_mistake());
        assert!(status(401, "").is_configuration_mistake());
        assert!(status(308, "").is_configuration_mistake());
        assert!(status(404, "model not found").is_configuration_mistake());
        // llama-server's /infill for a model without FIM tokens.
        assert!(status(501, "not supported").is_configuration_mistake());
        assert!(Failure::Misconfigured("no key".into()).is_configuration_mistake());
        assert!(!status(429, "").is_configuration_mistake());
        assert!(!status(500, "").is_configuration_mistake());
        assert!(!status(503, "").is_configuration_mistake());
        assert!(!Failure::FirstTokenTimeout.is_configuration_mistake());
        // One request too large for the server: refused, not a mistake.
        let vllm = "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens";
        let llama = "the request exceeds the available context size, try increasing it";
        for refused in [status(400, vllm), status(400, llama), status(413, "")] {
            assert!(refused.is_request_refused(), "{refused}");
            assert!(!refused.is_configuration_mistake(), "{refused}");
        }
        assert!(!status(400, suffix).is_request_refused());
        assert!(!status(500, vllm).is_request_refused());
    }

    #[test]
    fn every_spelling_of_the_key_an_error_may_echo_is_hidden() {
        let key = " sk-A b\"c/+ ";
        for echoed in [
            "Bearer  sk-A b\"c/+ ",
            "invalid key sk-A b\"c/+",
            r#"{"got": "sk-A b\"c/+"}"#,
            "https://h/?key=sk-A%20b%22c%2F%2B",
            "https://h/?key=sk-a%20b%22c%2f%2b",
        ] {
            let shown = Failure::Status(401, echoed.into())
                .redacted(key)
                .to_string();
            assert!(shown.contains("[the API key]"), "{echoed}: {shown}");
            assert!(!shown.contains("sk-"), "{echoed}: {shown}");
        }
    }

    #[test]
    fn the_workspace_key_is_the_folder_on_this_machine_not_its_name() {
        let policy = |affinity: &str| {
            format!(r#"{{"url": "http://h:1", "affinityHeader": "X-Session-ID", "affinity": "{affinity}"}}"#)
                .parse::<crate::config::RemoteConfig>()
                .unwrap()
                .resolve()
                .unwrap()
        };
        let in_checkout = |uri: &str| {
            let mut request = crate::policy::tests::request(
                uri,
                inkling_core::postprocess::Trigger::Invoked,
                "\n}\n",
            );
            request.context.preamble.repository = "backend".into();
            request.context.preamble.path = "src/a.rs".into();
            request
        };
        let (workspace, document) = (policy("workspace"), policy("document"));
        let alice = in_checkout("file:///home/alice/backend/src/a.rs");
        let bob = in_checkout("file:///home/bob/backend/src/a.rs");
        let mut alice_b = in_checkout("file:///home/alice/backend/src/b.rs");
        alice_b.context.preamble.path = "src/b.rs".into();
        let key = affinity_key;
        assert_eq!(key(&workspace, &alice), key(&workspace, &alice_b));
        assert_ne!(key(&workspace, &alice), key(&workspace, &bob));
        assert_ne!(key(&document, &alice), key(&document, &alice_b));
        assert!(key(&workspace, &alice).starts_with("inkling-"));
        // Outside the workspace (the relative path is the absolute one) or not a
        // file: no folder, so the document's own key, not one every user shares.
        let mut outside = in_checkout("file:///tmp/scratch.rs");
        outside.context.preamble.path = "/tmp/scratch.rs".into();
        let mut untitled = in_checkout("untitled:Untitled-1");
        untitled.context.preamble.path = "Untitled-1".into();
        for lone in [outside, untitled] {
            assert_eq!(key(&workspace, &lone), key(&document, &lone));
        }
    }
}
