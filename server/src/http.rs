//! The opt-in loopback HTTP endpoint: the same pipeline as the LSP, for clients
//! that speak HTTP instead.
//!
//! - `POST /v1/completions`: the OpenAI completions shape, as Zed's
//!   `open_ai_compatible_api` edit-prediction provider sends it. Its `prompt` is
//!   laid out in one of the FIM formats (see [`split_fim_prompt`]); inkling takes
//!   the prefix and suffix out of it and builds its own prompt for the loaded model.
//! - `POST /infill`: llama.cpp server's shape, as llama.vim and llama.vscode send it.
//!
//! Both stream with `"stream": true`, as server-sent events in llama-server's and
//! OpenAI's shapes (so another inkling can use this one as its remote engine).
//!
//! Neither shape says which file a request is for. A request that does (the
//! optional, non-standard fields `filename` and `language`) for a disabled file
//! (`disabledPaths`, `disabledLanguages`) gets an empty answer without reaching the
//! model. `/infill`'s `input_extra` (other files' chunks) never reaches the prompt,
//! from any file.
//!
//! Invariants:
//! - The listener is bound to 127.0.0.1 only: code never leaves the machine, and
//!   nothing on the network can use the model.
//! - A web page cannot use it either: a request with an `Origin` header not of this
//!   machine's loopback is refused (403). Browsers send `Origin` with every POST, a
//!   page whose name was rebound to 127.0.0.1 (DNS rebinding) included; editors and
//!   command-line clients send none.
//! - A newer request supersedes the one in flight (editors ask once per keystroke;
//!   the superseded one is answered 503 naming it, or in a stream an error event,
//!   never an empty answer that looks like the model's), and a request whose client
//!   hung up is cancelled (a stream with nothing to say
//!   sends an SSE comment every [`KEEP_ALIVE`], so the hang-up is noticed while the
//!   prompt decodes, not at the first token).
//! - A malformed request gets a 4xx answer with a JSON error; the server keeps serving.
//! - At most [`MAX_CONNECTIONS`] connections are open at once; one that has not sent
//!   its request's headers within [`HEADER_TIMEOUT`] or its body within
//!   [`BODY_TIMEOUT`], or stays open longer than
//!   [`CONNECTION_LIFETIME`], is closed, so idle or slow clients cannot hold the
//!   endpoint (or the process's file descriptors) hostage. At the cap, a new
//!   connection closes the one idle longest (no request being answered, a stream
//!   included): clients trickling headers or a body, or idling, make room at once
//!   for a real one instead of locking it out until their timeouts.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, mpsc};

use inkling_core::context;
use inkling_core::generate::{CancelFlag, Generation, StopReason, TextSink};
use inkling_core::lock;
use inkling_core::postprocess::Trigger;
use inkling_core::syntax;
use inkling_core::workspace::DisabledFiles;
use inkling_remote::format;

use crate::suggest::{Answer, Ask, SuggestError};
use crate::{CurrentPipeline, Pipeline};

/// The document HTTP requests are for: the backend keeps one warm cache for it.
const DOCUMENT: &str = "http";

/// Binds the endpoint's listener on 127.0.0.1 at `port` (0 picks a free port).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// Most connections open at once: one more closes the idlest (see [`serve`]), or is
/// closed itself when each has a request being answered.
pub const MAX_CONNECTIONS: usize = 128;
/// Most time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most time one connection stays open, requests and keep-alive idling included
/// (a client reconnects; one completion takes seconds at most).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Most time a client has to send a request's body once its headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body (axum's default for JSON bodies).
const MAX_BODY_BYTES: usize = 2 << 20;
/// Longest wait for the permit of a connection closed to make room.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// Shortest time between two log lines about refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves the endpoint on `listener` until the process ends (or the task is
/// aborted), with the pipeline in use at each request.
pub async fn serve(listener: TcpListener, pipeline: CurrentPipeline) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!("HTTP endpoint listening on http://{address}");
    }
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/infill", post(infill))
        .with_state(Arc::new(Endpoint {
            pipeline,
            in_flight: Mutex::new(None),
        }))
        // Inside `body_in_time`: a connection still trickling its body is not busy.
        .layer(axum::middleware::from_fn(answering))
        .layer(axum::middleware::from_fn(body_in_time))
        .layer(axum::middleware::from_fn(no_web_pages));
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut refused = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait for connections to close.
                if last_refusal_log.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    tracing::warn!("HTTP endpoint cannot accept a connection: {e}");
                    last_refusal_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let evicted = lock(&connections).evict_idlest();
                // The closed connection's task gives its permit back at once; the
                // bound keeps the loop accepting should it not.
                let freed = evicted
                    .then(|| tokio::time::timeout(EVICTION_WAIT, open.clone().acquire_owned()));
                match freed {
                    Some(freed) => freed.await.ok().and_then(Result::ok),
                    None => None,
                }
            }
        };
        let Some(permit) = permit else {
            refused += 1;
            if last_refusal_log.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                tracing::warn!(
                    "HTTP endpoint: {MAX_CONNECTIONS} connections open; refused {refused} more so far"
                );
                last_refusal_log = Some(Instant::now());
            }
            continue;
        };
        let (id, activity) = lock(&connections).open();
        let service = TowerToHyperService::new(app.clone().layer(Extension(activity.clone())));
        let registered = Registered {
            connections: connections.clone(),
            id,
        };
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                ended = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {
                    if let Ok(Err(e)) = ended {
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                }
                () = activity.evicted.notified() => {
                    tracing::debug!("HTTP connection closed to make room for a new one");
                }
            }
            // Forgotten before its permit is given back, on a panic too.
            drop(registered);
            drop(permit);
        });
    }
}

/// The open connections, for choosing one to close when a new one finds the endpoint
/// full.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, Arc<Activity>>,
}

/// What a connection is doing, as its requests report it.
struct Activity {
    /// Requests of this connection being answered now (HTTP/1: one at most): from
    /// the handler's start until the response body is sent whole or dropped.
    answering: AtomicU64,
    /// When the connection was accepted, or its last request began or was answered.
    last_active: Mutex<Instant>,
    /// Told when the connection is to close.
    evicted: Notify,
}

/// A connection's place in [`Connections`], given up when dropped.
struct Registered {
    connections: Arc<Mutex<Connections>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.connections).close(self.id);
    }
}

impl Connections {
    /// A new connection: its id and its activity.
    fn open(&mut self) -> (u64, Arc<Activity>) {
        self.next_id += 1;
        let activity = Arc::new(Activity {
            answering: AtomicU64::new(0),
            last_active: Mutex::new(Instant::now()),
            evicted: Notify::new(),
        });
        self.open.insert(self.next_id, activity.clone());
        (self.next_id, activity)
    }

    /// Forgets a closed connection.
    fn close(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Closes the connection idle longest (no request being answered, the oldest
    /// last activity); false when every one has a request being answered.
    fn evict_idlest(&mut self) -> bool {
        let idlest = self
            .open
            .iter()
            .filter(|(_, a)| a.answering.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, a)| *lock(&a.last_active))
            .map(|(&id, _)| id);
        let Some(activity) = idlest.and_then(|id| self.open.remove(&id)) else {
            return false;
        };
        // Stored if the connection's task is not waiting yet: it ends when it does.
        activity.evicted.notify_one();
        true
    }
}

/// Counts a request as its connection's activity while it is answered (see
/// [`Connections::evict_idlest`]): a streamed answer runs on after its handler
/// returned, so until its body is sent whole or dropped.
async fn answering(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(activity) = request.extensions().get::<Arc<Activity>>().cloned() else {
        return next.run(request).await;
    };
    *lock(&activity.last_active) = Instant::now();
    activity.answering.fetch_add(1, Ordering::Relaxed);
    // Dropped with the handler too, when the client hangs up before the answer.
    let answering = Answering(activity);
    next.run(request).await.map(|body| {
        Body::new(AnsweringBody {
            body,
            _answering: answering,
        })
    })
}

/// Ends a request's count in [`Activity::answering`] when dropped.
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        // Idle from now: a long answer just sent is recent activity.
        *lock(&self.0.last_active) = Instant::now();
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that counts its request as being answered while it lives.
struct AnsweringBody {
    body: Body,
    _answering: Answering,
}

impl hyper::body::Body for AnsweringBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Refuses a request sent by a web page (see the invariants above), before its body
/// is read.
async fn no_web_pages(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // Every `Origin` header counts: a second one could name the page behind the first.
    let foreign = request
        .headers()
        .get_all(header::ORIGIN)
        .iter()
        .find(|origin| !is_loopback_origin(origin.as_bytes()));
    match foreign {
        Some(origin) => error(
            StatusCode::FORBIDDEN,
            format!(
                "requests from web pages are refused (Origin: {})",
                String::from_utf8_lossy(origin.as_bytes())
            ),
        ),
        _ => next.run(request).await,
    }
}

/// Whether `origin` (an `Origin` header's value) is a page served from this
/// machine's loopback: `http://localhost:8080`, `https://127.0.0.1`, `http://[::1]`.
fn is_loopback_origin(origin: &[u8]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    // A port is digits only: anything after it could name another host.
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Reads a request's whole body within [`BODY_TIMEOUT`] before any handler runs, so
/// a client trickling its body cannot hold a connection for long.
async fn body_in_time(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Ok(Err(e)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the request body (at most {MAX_BODY_BYTES} bytes): {e}"),
        ),
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body was not sent within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ),
    }
}

struct Endpoint {
    pipeline: CurrentPipeline,
    in_flight: Mutex<Option<CancelFlag>>,
}

/// The file a request is for, in fields of its own that no standard client sends
/// (a request without them is for no file in particular, and never disabled).
#[derive(Debug, Default, Deserialize)]
struct RequestFile {
    /// The file's path, matched against `disabledPaths` as given.
    filename: Option<String>,
    /// Its LSP language id; without it, the one its extension says (if any).
    language: Option<String>,
}

impl RequestFile {
    /// Whether completions are disabled for this file.
    fn disabled(&self, disabled: &DisabledFiles) -> bool {
        let filename = self.filename.as_deref();
        let language = self
            .language
            .as_deref()
            .or_else(|| filename.and_then(|f| syntax::language_of_path(std::path::Path::new(f))));
        language.is_some_and(|l| disabled.language(l)) || filename.is_some_and(|f| disabled.path(f))
    }
}

/// Cancels a request's generation when its handler ends or is dropped (the client
/// hung up).
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Why a request gets no answer of its own.
#[derive(Debug)]
enum Unanswered {
    /// A newer request took the engine.
    Superseded,
    /// A stage failed (a bug, contained).
    Failed(String),
}

impl Unanswered {
    fn status(&self) -> StatusCode {
        match self {
            // Transient, as a busy server's: not the asker's mistake.
            Unanswered::Superseded => StatusCode::SERVICE_UNAVAILABLE,
            Unanswered::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            Unanswered::Superseded => {
                "superseded: a newer request (or a settings change) took the engine; the newest request is answered".into()
            }
            Unanswered::Failed(e) => e.clone(),
        }
    }

    /// The error's `type`: a client (another inkling's remote engine, say) tells a
    /// superseded request from a failing server by it.
    fn kind(&self) -> &'static str {
        match self {
            Unanswered::Superseded => format::SUPERSEDED,
            Unanswered::Failed(_) => "server_error",
        }
    }

    /// The error response.
    fn response(&self) -> Response {
        let body = error_body(self.kind(), self.message());
        (self.status(), Json(body)).into_response()
    }

    /// The error as a stream's last event.
    fn event(&self) -> String {
        error_body(self.kind(), self.message()).to_string()
    }
}

impl Endpoint {
    /// Runs `pipeline` for text split at the cursor of `file`, superseding the
    /// request in flight.
    async fn suggest(
        &self,
        pipeline: &Pipeline,
        file: &RequestFile,
        prefix: &str,
        suffix: &str,
        max_tokens: Option<u32>,
        partial: Option<TextSink>,
    ) -> Result<Option<Answer>, Unanswered> {
        // llama.vim's and llama.vscode's cache-warming requests (no text, nothing to
        // predict, only `input_extra`, which inkling does not use) must neither
        // cancel the request in flight nor replace the warm cache with an empty prompt;
        // nor may a request for a disabled file.
        if max_tokens == Some(0)
            || (prefix.is_empty() && suffix.is_empty())
            || file.disabled(&pipeline.settings().disabled)
        {
            return Ok(None);
        }
        let cancel = CancelFlag::default();
        let older = lock(&self.in_flight).replace(cancel.clone());
        if let Some(older) = older {
            older.cancel();
        }
        let _guard = CancelOnDrop(cancel.clone());
        let started = std::time::Instant::now();
        let context = crate::suggest::contain_panic(|| {
            let mut context = context::from_parts(prefix, suffix, "");
            // The file's path, for what depends on it (a remote's deny-list).
            context.preamble.path = file.filename.clone().unwrap_or_default();
            context
        })
        .map_err(|_| Unanswered::Failed("internal error".into()))?;
        let assembly_time = started.elapsed();
        let ask = Ask {
            context,
            // Every keystroke asks: these are automatic requests, with their time limits.
            trigger: Trigger::Automatic,
            cancel,
            document: DOCUMENT.into(),
            partial,
            max_tokens,
            assembly_time,
            may_stop_unsure: false,
        };
        match pipeline.suggest(ask).await {
            Ok(answer) => Ok(answer),
            Err(SuggestError::Cancelled) => Err(Unanswered::Superseded),
            Err(SuggestError::Failed(e)) => Err(Unanswered::Failed(e)),
        }
    }
}

/// An error answer: `{"error": {"message", "type"}}`, the OpenAI shape.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (status, Json(error_body(kind, message.into()))).into_response()
}

/// The body of an error answer, or a stream's error event.
fn error_body(kind: &str, message: String) -> Value {
    json!({"error": {"message": message, "type": kind}})
}

fn rejected(rejection: JsonRejection) -> Response {
    error(rejection.status(), rejection.body_text())
}

/// A string or a list of strings (OpenAI's `stop` and `prompt`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The fields of an OpenAI completions request that inkling uses. Others (sampling
/// parameters) are accepted and ignored: answers are greedy.
#[derive(Debug, Deserialize)]
struct CompletionsRequest {
    model: Option<String>,
    prompt: OneOrMany,
    /// Text after the cursor, for prompts not in a FIM format.
    suffix: Option<String>,
    max_tokens: Option<u32>,
    stop: Option<OneOrMany>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    file: RequestFile,
}

/// The FIM layouts a client may have laid its prompt out in: (prefix marker,
/// suffix marker, middle marker), in prefix-suffix-middle order.
const PSM_FORMATS: [(&str, &str, &str); 5] = [
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    ("<PRE> ", " <SUF>", " <MID>"),
    ("<|code_prefix|>", "<|code_suffix|>", "<|code_middle|>"),
];

/// Splits a FIM-formatted prompt into the text before and after the cursor.
/// Prompts in no known format are all prefix. Repository headers before the
/// prefix marker (file separators, paths) are dropped.
pub fn split_fim_prompt(prompt: &str) -> (String, String) {
    for (pre, suf, mid) in PSM_FORMATS {
        if let Some((_, rest)) = prompt.split_once(pre)
            && let Some((prefix, rest)) = rest.split_once(suf)
        {
            let suffix = rest.strip_suffix(mid).unwrap_or(rest);
            return (prefix.to_owned(), suffix.to_owned());
        }
    }
    // Codestral: suffix first.
    if let Some((_, rest)) = prompt.split_once("[SUFFIX]")
        && let Some((suffix, prefix)) = rest.split_once("[PREFIX]")
    {
        return (prefix.to_owned(), suffix.to_owned());
    }
    (prompt.to_owned(), String::new())
}

/// Cuts `text` before the first of `stops`.
fn cut_at_stops(text: &str, stops: &[String]) -> String {
    let end = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..end].to_owned()
}

/// Completion ids: Zed keys its predictions by them, so they must not repeat.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage(generation: Option<&Generation>) -> Value {
    let (prompt, completion) = generation.map_or((0, 0), |g| (g.prompt_tokens, g.generated_tokens));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// The answer object of `/v1/completions` with `text` as its choice's text (for a
/// stream: the last chunk, with the text not sent yet).
fn completion_body(answer: &Option<Answer>, text: &str, model: &str) -> Value {
    let generation = answer.as_ref().and_then(|a| a.generation.as_ref());
    let finish_reason = match generation.map(|g| g.stop_reason) {
        Some(StopReason::TokenLimit | StopReason::ContextFull) => "length",
        _ => "stop",
    };
    json!({
        "id": format!("cmpl-inkling-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        "object": "text_completion",
        "created": unix_time(),
        "model": model,
        "choices": [{
            "text": text,
            "index": 0,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": usage(generation),
    })
}

async fn completions(
    State(endpoint): State<Arc<Endpoint>>,
    request: Result<Json<CompletionsRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => return rejected(rejection),
    };
    let prompts = request.prompt.into_vec();
    let [prompt] = prompts.as_slice() else {
        return error(StatusCode::BAD_REQUEST, "exactly one prompt is supported");
    };
    let (prefix, mut suffix) = split_fim_prompt(prompt);
    if let Some(explicit) = request.suffix {
        suffix = explicit;
    }
    let stops = request.stop.map_or_else(Vec::new, OneOrMany::into_vec);
    let model = request.model.unwrap_or_else(|| "inkling".into());
    let pipeline = endpoint.pipeline.get();
    if request.stream {
        let (events, sink, sent) = stream_of(move |delta| {
            json!({
                "object": "text_completion",
                "model": "inkling",
                "choices": [{"text": delta, "index": 0, "logprobs": null, "finish_reason": null}],
            })
        });
        let file = request.file;
        let max_tokens = request.max_tokens;
        return events.respond(async move {
            let answer = endpoint
                .suggest(&pipeline, &file, &prefix, &suffix, max_tokens, Some(sink))
                .await?;
            let text = answer
                .as_ref()
                .and_then(|a| a.texts.first())
                .map_or_else(String::new, |t| cut_at_stops(t, &stops));
            let rest = unsent(&text, &lock(&sent));
            Ok(vec![
                completion_body(&answer, rest, &model).to_string(),
                "[DONE]".into(),
            ])
        });
    }
    let answer = match endpoint
        .suggest(
            &pipeline,
            &request.file,
            &prefix,
            &suffix,
            request.max_tokens,
            None,
        )
        .await
    {
        Ok(answer) => answer,
        Err(unanswered) => return unanswered.response(),
    };
    let text = answer
        .as_ref()
        .and_then(|a| a.texts.first())
        .map_or_else(String::new, |t| cut_at_stops(t, &stops));
    Json(completion_body(&answer, &text, &model)).into_response()
}

/// A streamed answer's events (server-sent events, each a JSON `data:` line), fed
/// by the generated text as it grows and then by the last events.
struct Events {
    sender: mpsc::UnboundedSender<String>,
    receiver: mpsc::UnboundedReceiver<String>,
}

/// The events of a stream, the sink that turns each growth of the generated text
/// into an event shaped by `delta`, and the text sent so far. Like llama-server's
/// and OpenAI's streams, these events carry the generated text before
/// post-processing; the last event carries what the post-processed answer adds (an
/// answer from memory comes whole in it).
fn stream_of(
    delta: impl Fn(&str) -> Value + Send + Sync + 'static,
) -> (Events, TextSink, Arc<Mutex<String>>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let sent = Arc::new(Mutex::new(String::new()));
    let (to_client, so_far) = (sender.clone(), sent.clone());
    let sink = TextSink::new(move |text| {
        let mut sent = lock(&so_far);
        if let Some(grown) = text.strip_prefix(sent.as_str()).filter(|g| !g.is_empty()) {
            let _ = to_client.send(delta(grown).to_string());
            *sent = text.to_owned();
        }
    });
    (Events { sender, receiver }, sink, sent)
}

/// What of `text` a stream that sent `sent` has not sent yet.
fn unsent<'t>(text: &'t str, sent: &str) -> &'t str {
    text.strip_prefix(sent).unwrap_or_default()
}

impl Events {
    /// The response: the events as `answer` produces them, then its last events
    /// (or an error event). The request is cancelled when the client hangs up.
    fn respond(
        self,
        answer: impl Future<Output = Result<Vec<String>, Unanswered>> + Send + 'static,
    ) -> Response {
        let Events { sender, receiver } = self;
        tokio::spawn(async move {
            let last = tokio::select! {
                last = answer => last,
                // Dropping `answer` cancels its request.
                () = sender.closed() => return,
            };
            let last = last.unwrap_or_else(|unanswered| vec![unanswered.event()]);
            for event in last {
                let _ = sender.send(event);
            }
        });
        let body = futures_util::stream::unfold(receiver, |receiver| async move {
            let (chunk, receiver) = next_chunk(receiver).await?;
            Some((Ok::<_, std::convert::Infallible>(chunk), receiver))
        });
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// How long a stream stays silent before a comment line: writing is how a hung-up
/// client is noticed, and the prompt before the first token can take seconds that
/// the model would spend for nobody (a hedging inkling drops the request it lost).
const KEEP_ALIVE: Duration = Duration::from_millis(100);

/// The next chunk of a stream's body: its next event, or an SSE comment after
/// [`KEEP_ALIVE`] without one; `None` once the events end.
async fn next_chunk(
    mut receiver: mpsc::UnboundedReceiver<String>,
) -> Option<(String, mpsc::UnboundedReceiver<String>)> {
    match tokio::time::timeout(KEEP_ALIVE, receiver.recv()).await {
        Ok(data) => Some((format!("data: {}\n\n", data?), receiver)),
        Err(_) => Some((":\n\n".to_owned(), receiver)),
    }
}

/// The fields of a llama.cpp `/infill` request that inkling uses. The text before
/// the cursor is `input_prefix` + `prompt` (llama.vim sends the cursor line's start
/// as `prompt`); others (`input_extra`, sampling, `t_max_*`) are accepted and ignored.
#[derive(Debug, Deserialize)]
struct InfillRequest {
    input_prefix: String,
    input_suffix: String,
    #[serde(default)]
    prompt: String,
    n_predict: Option<i64>,
    response_fields: Option<Vec<String>>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    file: RequestFile,
}

/// Keeps only the `fields` of `full` (paths like `timings/prompt_n`), flattened
/// with the path as the key, the way llama.cpp's server answers them.
fn select_fields(full: &Value, fields: &[String]) -> Value {
    let selected = fields
        .iter()
        .filter_map(|path| {
            let value = path
                .split('/')
                .try_fold(full, |v, key| v.get(key).filter(|_| !key.is_empty()))?;
            Some((path.clone(), value.clone()))
        })
        .collect();
    Value::Object(selected)
}

async fn infill(
    State(endpoint): State<Arc<Endpoint>>,
    request: Result<Json<InfillRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => return rejected(rejection),
    };
    let prefix = format!("{}{}", request.input_prefix, request.prompt);
    // A negative `n_predict` means "no limit" in llama.cpp: the configured one applies.
    let max_tokens = request.n_predict.and_then(|n| u32::try_from(n).ok());
    let pipeline = endpoint.pipeline.get();
    if request.stream {
        let (events, sink, sent) = stream_of(|delta| json!({"content": delta, "stop": false}));
        return events.respond(async move {
            let answer = endpoint
                .suggest(
                    &pipeline,
                    &request.file,
                    &prefix,
                    &request.input_suffix,
                    max_tokens,
                    Some(sink),
                )
                .await?;
            let mut last = infill_body(&answer, &pipeline, max_tokens);
            let content = last["content"].as_str().unwrap_or_default();
            last["content"] = json!(unsent(content, &lock(&sent)));
            Ok(vec![last.to_string()])
        });
    }
    let answer = match endpoint
        .suggest(
            &pipeline,
            &request.file,
            &prefix,
            &request.input_suffix,
            max_tokens,
            None,
        )
        .await
    {
        Ok(answer) => answer,
        Err(unanswered) => return unanswered.response(),
    };
    let full = infill_body(&answer, &pipeline, max_tokens);
    match &request.response_fields {
        Some(fields) => Json(select_fields(&full, fields)),
        None => Json(full),
    }
    .into_response()
}

/// The answer object of `/infill`, llama-server's fields.
fn infill_body(answer: &Option<Answer>, pipeline: &Pipeline, max_tokens: Option<u32>) -> Value {
    let content = answer
        .as_ref()
        .and_then(|a| a.texts.first().cloned())
        .unwrap_or_default();
    let generation = answer.as_ref().and_then(|a| a.generation.as_ref());
    let (prompt_n, prompt_ms, predicted_n, predicted_ms, cached) =
        generation.map_or((0, 0.0, 0, 0.0, 0), |g| {
            (
                g.prompt_tokens - g.reused_tokens,
                g.prompt_time.as_secs_f64() * 1000.0,
                g.generated_tokens,
                g.generation_time.as_secs_f64() * 1000.0,
                g.prompt_tokens,
            )
        });
    let per_second = |n: usize, ms: f64| {
        if ms > 0.0 {
            n as f64 * 1000.0 / ms
        } else {
            0.0
        }
    };
    let per_token = |n: usize, ms: f64| if n > 0 { ms / n as f64 } else { 0.0 };
    let settings = pipeline.settings();
    json!({
        "content": content,
        "stop": true,
        "stop_type": if generation.is_some_and(|g| g.stop_reason == StopReason::TokenLimit) { "limit" } else { "eos" },
        "truncated": false,
        "tokens_cached": cached,
        "from_memory": answer.as_ref().is_some_and(|a| a.generation.is_none()),
        "timings": {
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": per_token(prompt_n, prompt_ms),
            "prompt_per_second": per_second(prompt_n, prompt_ms),
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": per_token(predicted_n, predicted_ms),
            "predicted_per_second": per_second(predicted_n, predicted_ms),
        },
        "generation_settings": {
            "n_ctx": settings.engine.context_size,
            "n_predict": max_tokens.map_or(settings.max_tokens, |n| n.min(settings.max_tokens)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_stream_sends_comments_until_its_events_end() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (chunk, receiver) = next_chunk(receiver).await.unwrap();
        assert_eq!(chunk, ":\n\n");
        sender.send("{}".to_owned()).unwrap();
        let (chunk, receiver) = next_chunk(receiver).await.unwrap();
        assert_eq!(chunk, "data: {}\n\n");
        drop(sender);
        assert!(next_chunk(receiver).await.is_none());
    }

    #[test]
    fn only_loopback_pages_are_loopback_origins() {
        for origin in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8012",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback_origin(origin.as_bytes()), "{origin}");
        }
        for origin in [
            "null",
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io:8012",
            "http://[::1].evil",
            "http://localhost:5173 http://evil.example",
            "http://[::1]:80/x",
            "http://localhost:",
            "file://",
            "",
            "http://",
        ] {
            assert!(!is_loopback_origin(origin.as_bytes()), "{origin}");
        }
        assert!(!is_loopback_origin(b"http://local\xffhost"));
    }

    #[test]
    fn fim_prompts_are_split_at_the_cursor() {
        let cases = [
            "<|fim_prefix|>def f():\n    <|fim_suffix|>\nprint(1)<|fim_middle|>",
            "<fim_prefix>def f():\n    <fim_suffix>\nprint(1)<fim_middle>",
            "<｜fim▁begin｜>def f():\n    <｜fim▁hole｜>\nprint(1)<｜fim▁end｜>",
            "<|code_prefix|>def f():\n    <|code_suffix|>\nprint(1)<|code_middle|>",
            "<PRE> def f():\n     <SUF>\nprint(1) <MID>",
            "[SUFFIX]\nprint(1)[PREFIX]def f():\n    ",
            "<|repo_name|>r\n<|file_sep|>a.py\n<|fim_prefix|>def f():\n    <|fim_suffix|>\nprint(1)<|fim_middle|>",
        ];
        for prompt in cases {
            let (prefix, suffix) = split_fim_prompt(prompt);
            assert_eq!(prefix, "def f():\n    ", "{prompt}");
            assert_eq!(suffix, "\nprint(1)", "{prompt}");
        }
        assert_eq!(
            split_fim_prompt("plain text"),
            ("plain text".to_owned(), String::new())
        );
    }

    #[test]
    fn stops_cut_at_the_earliest() {
        let stops = vec!["\n\n".to_owned(), "END".to_owned(), String::new()];
        assert_eq!(cut_at_stops("a\nbEND\n\nc", &stops), "a\nb");
        assert_eq!(cut_at_stops("abc", &stops), "abc");
    }

    #[test]
    fn requests_for_disabled_files_are_told_by_their_own_fields() {
        let disabled =
            DisabledFiles::new(vec!["markdown".into()], vec!["secrets/**".into()]).unwrap();
        let file = |body: Value| serde_json::from_value::<InfillRequest>(body).unwrap().file;
        let base = json!({"input_prefix": "a", "input_suffix": ""});
        let with = |extra: Value| {
            let mut body = base.clone();
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            file(body)
        };
        assert!(!file(base.clone()).disabled(&disabled));
        assert!(with(json!({"filename": "secrets/key.py"})).disabled(&disabled));
        assert!(with(json!({"language": "markdown"})).disabled(&disabled));
        assert!(!with(json!({"filename": "src/key.py", "language": "python"})).disabled(&disabled));
        // `input_extra` is no file of the request's.
        assert!(
            !with(json!({"input_extra": [{"filename": "secrets/key.py", "text": "x"}]}))
                .disabled(&disabled)
        );
        let completions: CompletionsRequest =
            serde_json::from_value(json!({"prompt": "x", "filename": "secrets/a.rs"})).unwrap();
        assert!(completions.file.disabled(&disabled));
    }

    #[test]
    fn response_fields_are_flattened_paths() {
        let full = json!({"content": "x", "timings": {"prompt_n": 3}, "n": 1});
        let fields = [
            "content".to_owned(),
            "timings/prompt_n".to_owned(),
            "missing/path".to_owned(),
            String::new(),
        ];
        assert_eq!(
            select_fields(&full, &fields),
            json!({"content": "x", "timings/prompt_n": 3})
        );
    }
}
