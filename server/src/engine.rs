//! The engine: one worker thread that owns the llama model and context.
//!
//! Nothing else touches llama.cpp. Other threads talk to the worker through an
//! [`Engine`] handle: they send a [`CompletionRequest`] and await a
//! [`Generation`]; they watch an [`EngineState`] for loading progress.
//!
//! Invariants:
//! - The worker remembers which tokens its KV cache holds (`cached`); a new prompt
//!   keeps the longest common prefix and decodes only the rest.
//! - Every request carries a [`CancelFlag`]; the worker checks it before each
//!   decode call (prompt chunks of [`PROMPT_CHUNK`] tokens, then every generated
//!   token), so a cancelled or superseded request stops within one decode step.
//! - A failure to find or load the model leaves the worker answering
//!   [`EngineError::NotReady`]; the process keeps running.

use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::config::Settings;
use crate::context::CompletionContext;
use crate::model_files;
use crate::postprocess::StopRules;
use crate::prompt::{self, Budget, FimTokens, Prompt, Template, Token, Tokenizer};

/// Prompt tokens decoded per call: small enough that a cancel is noticed quickly,
/// large enough to keep the matrix kernels efficient.
pub const PROMPT_CHUNK: usize = 64;

/// Set to ask the worker to stop a request; cheap to clone and share.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks for the request to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether `other` is a clone of this flag (not merely in the same state).
    pub fn same_as(&self, other: &CancelFlag) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

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
    /// Whether the model has fill-in-the-middle tokens (so the suffix is used).
    pub fim: bool,
    /// Context size in tokens.
    pub context_size: u32,
}

impl ModelInfo {
    /// A one-line description for clients: "model ready: PATH (…)".
    pub fn describe(&self) -> String {
        format!(
            "model ready: {} ({}, context {} tokens)",
            self.path.display(),
            if self.fim {
                "fill-in-the-middle"
            } else {
                "prefix only"
            },
            self.context_size
        )
    }
}

/// One completion to generate.
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// The text around the cursor.
    pub context: CompletionContext,
    /// When to stop early.
    pub stop: StopRules,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Most time to spend generating (after the prompt).
    pub time_limit: Duration,
    /// Set when the request is no longer wanted.
    pub cancel: CancelFlag,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// The stop rules said the answer is complete.
    StopRule,
    /// The token limit was reached.
    TokenLimit,
    /// The time limit was reached.
    TimeLimit,
    /// The context window is full.
    ContextFull,
}

/// The raw result of a generation, before post-processing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Generated text (invalid UTF-8 at a cut is dropped).
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the previous request.
    pub reused_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Why generation ended.
    pub stop_reason: StopReason,
}

/// Why a request got no generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The model is still loading, or failed to load.
    NotReady,
    /// The request was cancelled or superseded.
    Cancelled,
    /// llama.cpp reported an error.
    Failed(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::NotReady => write!(f, "the model is not ready"),
            EngineError::Cancelled => write!(f, "the request was cancelled"),
            EngineError::Failed(e) => write!(f, "generation failed: {e}"),
        }
    }
}

/// Running totals of what the engine did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests that ended cancelled.
    pub cancelled: AtomicU64,
    /// Prompt tokens decoded.
    pub prompt_tokens_evaluated: AtomicU64,
    /// Prompt tokens whose KV entries were reused.
    pub prompt_tokens_reused: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
}

/// A point-in-time copy of [`Counters`], as sent to clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountersSnapshot {
    /// Requests received.
    pub requests: u64,
    /// Requests that ended cancelled.
    pub cancelled: u64,
    /// Prompt tokens decoded.
    pub prompt_tokens_evaluated: u64,
    /// Prompt tokens whose KV entries were reused.
    pub prompt_tokens_reused: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
}

impl Counters {
    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            requests: get(&self.requests),
            cancelled: get(&self.cancelled),
            prompt_tokens_evaluated: get(&self.prompt_tokens_evaluated),
            prompt_tokens_reused: get(&self.prompt_tokens_reused),
            generated_tokens: get(&self.generated_tokens),
        }
    }
}

struct Job {
    request: CompletionRequest,
    reply: oneshot::Sender<Result<Generation, EngineError>>,
}

/// A handle to the engine's worker thread. Cloning shares the same worker.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    state: watch::Receiver<EngineState>,
    counters: Arc<Counters>,
}

impl Engine {
    /// Starts the worker, which finds (or fetches) and loads the model in the background.
    pub fn start(settings: Settings) -> Engine {
        let (jobs, job_receiver) = mpsc::channel();
        let (state_sender, state) = watch::channel(EngineState::Loading {
            message: "starting".into(),
            percent: None,
        });
        let counters = Arc::new(Counters::default());
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name("inkling-engine".into())
            .spawn(move || worker(settings, job_receiver, state_sender, worker_counters))
            .expect("spawning the engine thread");
        Engine {
            jobs,
            state,
            counters,
        }
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<EngineState> {
        self.state.clone()
    }

    /// Whether the model is loaded.
    pub fn is_ready(&self) -> bool {
        matches!(*self.state.borrow(), EngineState::Ready(_))
    }

    /// The engine's running totals.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    /// Generates a completion. Answers [`EngineError::NotReady`] at once while the model
    /// is not loaded.
    pub async fn complete(&self, request: CompletionRequest) -> Result<Generation, EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotReady);
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { request, reply })
            .map_err(|_| EngineError::Failed("the engine thread has stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(EngineError::Failed("the engine thread has stopped".into())))
    }
}

fn worker(
    settings: Settings,
    jobs: mpsc::Receiver<Job>,
    state: watch::Sender<EngineState>,
    counters: Arc<Counters>,
) {
    let report = |message: &str, percent: Option<u32>| {
        state.send_replace(EngineState::Loading {
            message: message.to_owned(),
            percent,
        });
    };
    let loaded = (|| {
        let path = match &settings.model {
            Some(path) => path.clone(),
            None => model_files::ensure_default_model(&mut |m| report(m, None))?,
        };
        model_files::validate_gguf(&path)?;
        report("loading the model", Some(0));
        let backend = LlamaBackend::init().map_err(|e| format!("llama.cpp init failed: {e}"))?;
        let progress_state = state.clone();
        let mut reported = 0;
        let params = LlamaModelParams::default().with_progress_callback(move |p| {
            // llama.cpp calls this hundreds of times; tell clients every 10%.
            let percent = (p * 100.0) as u32;
            if percent >= reported + 10 {
                reported = percent;
                progress_state.send_replace(EngineState::Loading {
                    message: "loading the model".into(),
                    percent: Some(percent),
                });
            }
            true
        });
        let model = LlamaModel::load_from_file(&backend, &path, &params)
            .map_err(|e| format!("cannot load model {}: {e}", path.display()))?;
        Ok::<_, String>((backend, model, path))
    })();
    let (backend, model, path) = match loaded {
        Ok(loaded) => loaded,
        Err(message) => return fail(&state, message, jobs),
    };
    let context_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(settings.context_size))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(settings.threads as i32)
        .with_n_threads_batch(settings.threads as i32)
        // Gemma 3's sliding-window cache refuses partial removal unless it is full-size,
        // and partial removal is what keeps the common prefix between keystrokes.
        .with_swa_full(true);
    let context = match model.new_context(&backend, context_params) {
        Ok(context) => context,
        Err(e) => {
            let message = format!(
                "cannot create a llama context of {} tokens: {e}",
                settings.context_size
            );
            return fail(&state, message, jobs);
        }
    };
    let vocab = model.vocab();
    let template = detect_template(&vocab);
    tracing::info!(
        model = %path.display(),
        fim = template.fim.is_some(),
        bos = template.bos.is_some(),
        context_size = settings.context_size,
        threads = settings.threads,
        "model ready"
    );
    state.send_replace(EngineState::Ready(ModelInfo {
        path,
        fim: template.fim.is_some(),
        context_size: context.n_ctx(),
    }));
    let pieces = vocab
        .tokens()
        .map(|t| vocab.token_to_piece(t, false, None).into_boxed_slice())
        .collect();
    let mut session = Session {
        context,
        vocab,
        pieces,
        template,
        cached: Vec::new(),
        counters,
    };
    for job in jobs {
        session.counters.requests.fetch_add(1, Ordering::Relaxed);
        let result = if job.request.cancel.is_cancelled() {
            Err(EngineError::Cancelled)
        } else {
            // A panic here (a bug) fails this request, not the worker: the cache is
            // forgotten, since it may no longer match `cached`.
            std::panic::catch_unwind(AssertUnwindSafe(|| session.generate(&job.request)))
                .unwrap_or_else(|_| {
                    session.context.clear_kv_cache();
                    session.cached.clear();
                    Err(EngineError::Failed("generation panicked".into()))
                })
        };
        if result == Err(EngineError::Cancelled) {
            session.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        let _ = job.reply.send(result); // The asker may have gone away.
    }
}

/// Records a load failure, then answers every request with `NotReady`.
fn fail(state: &watch::Sender<EngineState>, message: String, jobs: mpsc::Receiver<Job>) {
    tracing::error!("{message}");
    state.send_replace(EngineState::Failed(message));
    for job in jobs {
        let _ = job.reply.send(Err(EngineError::NotReady));
    }
}

/// Reads the model's special tokens: FIM tokens if it has all three, BOS if it wants one.
fn detect_template(vocab: &LlamaVocab<'_>) -> Template {
    let present = |t: LlamaToken| (t.0 >= 0).then_some(t.0);
    let fim = match (
        present(vocab.fim_pre()),
        present(vocab.fim_suf()),
        present(vocab.fim_mid()),
    ) {
        (Some(prefix), Some(suffix), Some(middle)) => Some(FimTokens {
            prefix,
            suffix,
            middle,
        }),
        _ => None,
    };
    Template {
        bos: vocab.should_add_bos().then(|| vocab.bos().0),
        fim,
    }
}

struct VocabTokenizer<'a, 'm>(&'a LlamaVocab<'m>);

impl Tokenizer for VocabTokenizer<'_, '_> {
    fn tokenize(&self, text: &str) -> Vec<Token> {
        self.0
            .tokenize(text.as_bytes(), false, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }
}

/// The worker's state once the model is loaded.
struct Session<'m> {
    context: LlamaContext<'m>,
    vocab: LlamaVocab<'m>,
    /// The text of every token, by id (for token healing).
    pieces: Vec<Box<[u8]>>,
    template: Template,
    /// The tokens whose KV entries sequence 0 holds, in position order.
    cached: Vec<Token>,
    counters: Arc<Counters>,
}

impl Session<'_> {
    fn generate(&mut self, request: &CompletionRequest) -> Result<Generation, EngineError> {
        let started = Instant::now();
        let Prompt {
            tokens: prompt,
            healed,
        } = prompt::build(
            &request.context,
            &self.template,
            Budget::default(),
            &VocabTokenizer(&self.vocab),
        );
        // The text the first generated token must start with (see `Prompt::healed`).
        let heal = healed.map_or(&[][..], |t| self.piece(t));
        let heal = heal.to_vec();
        let n_ctx = self.context.n_ctx() as usize;
        if prompt.len() + 1 >= n_ctx {
            return Err(EngineError::Failed(format!(
                "the prompt ({} tokens) does not fit the context ({n_ctx} tokens)",
                prompt.len()
            )));
        }
        let reused = self.reuse_prefix(&prompt);
        self.counters
            .prompt_tokens_reused
            .fetch_add(reused as u64, Ordering::Relaxed);
        let mut batch = LlamaBatch::new(PROMPT_CHUNK.max(1), 1);
        // The last prompt token is decoded on its own, whatever came before it, so a
        // repeated prompt (which reuses all but that token) gets the very same logits
        // and the same greedy answer as the first time.
        let Some((last, body)) = prompt.split_last() else {
            return Err(EngineError::Failed("empty prompt".into()));
        };
        let chunks = body[reused.min(body.len())..]
            .chunks(PROMPT_CHUNK)
            .chain([std::slice::from_ref(last)]);
        for chunk in chunks {
            if request.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            self.decode(&mut batch, chunk)?;
            self.counters
                .prompt_tokens_evaluated
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let prompt_done = started.elapsed();

        let mut sampler = LlamaSampler::greedy();
        let mut text = Utf8Stream::default();
        let mut generated = 0usize;
        let stop_reason = loop {
            if request.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let token = if generated == 0 && !heal.is_empty() {
                self.healing_token(&heal)
            } else {
                sampler.sample(&self.context, -1)
            };
            if self.vocab.is_eog(token) {
                break StopReason::EndOfGeneration;
            }
            let piece = self.piece(token.0);
            text.push(if generated == 0 {
                &piece[heal.len()..]
            } else {
                piece
            });
            generated += 1;
            if request.stop.end_of_answer(text.as_str(), false).is_some() {
                break StopReason::StopRule;
            }
            if generated >= request.max_tokens as usize {
                break StopReason::TokenLimit;
            }
            if started.elapsed() >= prompt_done + request.time_limit {
                break StopReason::TimeLimit;
            }
            if self.cached.len() + 1 >= n_ctx {
                break StopReason::ContextFull;
            }
            self.decode(&mut batch, &[token.0])?;
        };
        self.counters
            .generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
        tracing::debug!(
            prompt_tokens = prompt.len(),
            reused,
            generated,
            ?stop_reason,
            prompt_ms = prompt_done.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "generation"
        );
        Ok(Generation {
            text: text.text,
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated,
            stop_reason,
        })
    }

    fn piece(&self, token: Token) -> &[u8] {
        usize::try_from(token)
            .ok()
            .and_then(|i| self.pieces.get(i))
            .map_or(&[][..], |p| &p[..])
    }

    /// The most likely next token whose text starts with `heal` (greedy, like the sampler).
    fn healing_token(&self, heal: &[u8]) -> LlamaToken {
        let logits = self.context.get_logits_ith(-1);
        let mut best: Option<(usize, f32)> = None;
        for (id, &logit) in logits.iter().enumerate() {
            if best.is_none_or(|(_, b)| logit > b) && self.pieces[id].starts_with(heal) {
                best = Some((id, logit));
            }
        }
        // The healed token itself always qualifies, so `best` is set.
        LlamaToken(best.map_or(0, |(id, _)| id as i32))
    }

    /// Keeps the longest common prefix of the cache and `prompt` (less at least one token,
    /// whose logits the first sample needs) and drops the rest. Returns the kept length.
    fn reuse_prefix(&mut self, prompt: &[Token]) -> usize {
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        let removed = self
            .context
            .clear_kv_cache_seq(Some(0), Some(common as u32), None);
        if matches!(removed, Ok(true)) {
            self.cached.truncate(common);
            common
        } else {
            self.context.clear_kv_cache();
            self.cached.clear();
            0
        }
    }

    /// Decodes `tokens` after the cached ones, asking for logits of the last.
    fn decode(&mut self, batch: &mut LlamaBatch, tokens: &[Token]) -> Result<(), EngineError> {
        batch.clear();
        let start = self.cached.len();
        for (i, &token) in tokens.iter().enumerate() {
            batch
                .add(
                    LlamaToken(token),
                    (start + i) as i32,
                    &[0],
                    i + 1 == tokens.len(),
                )
                .map_err(|e| EngineError::Failed(e.to_string()))?;
        }
        if let Err(e) = self.context.decode(batch) {
            // The cache may hold part of the batch now: forget it all to stay consistent.
            self.context.clear_kv_cache();
            self.cached.clear();
            return Err(EngineError::Failed(e.to_string()));
        }
        self.cached.extend_from_slice(tokens);
        Ok(())
    }
}

/// Generated text, decoded as token bytes arrive. A token may end inside a character
/// (kept pending until the next completes it); bytes that can never be valid UTF-8
/// become U+FFFD rather than stopping the text there.
#[derive(Debug, Default)]
struct Utf8Stream {
    text: String,
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    self.text.push_str(valid);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.text
                        .push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid"));
                    match e.error_len() {
                        // An unfinished character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_joined_and_invalid_bytes_replaced() {
        let bytes = "a😀".as_bytes();
        let mut stream = Utf8Stream::default();
        stream.push(&bytes[..3]);
        assert_eq!(stream.as_str(), "a");
        stream.push(&bytes[3..]);
        assert_eq!(stream.as_str(), "a😀");
        stream.push(&[0xE4]);
        stream.push(b"x = 1\n");
        assert_eq!(stream.as_str(), "a😀\u{FFFD}x = 1\n");
    }

    #[test]
    fn cancel_flag_is_shared_between_clones() {
        let flag = CancelFlag::default();
        let clone = flag.clone();
        assert!(!clone.is_cancelled());
        flag.cancel();
        assert!(clone.is_cancelled());
    }
}
