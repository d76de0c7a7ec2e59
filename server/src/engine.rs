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

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaModel, RopeType};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use lru::LruCache;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::config::{MAX_CONTEXT_SIZE, MIN_CONTEXT_SIZE, Settings, Speculation};
use crate::context::CompletionContext;
use crate::model_catalog::{self, CHAT_MODEL_WARNING};
use crate::postprocess::StopRules;
use crate::prompt::{self, CachingTokenizer, Prompt, Token};
use crate::template::{self, Template};
use crate::vocab::VocabTokenizer;
use crate::{model_check, model_files};

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

/// One completion to generate.
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// The text around the cursor.
    pub context: CompletionContext,
    /// When to stop early.
    pub stop: StopRules,
    /// Most tokens to generate; 0 only brings the prompt into the cache.
    pub max_tokens: u32,
    /// Most time to spend on the prompt; `None` waits for all of it.
    pub prompt_time_limit: Option<Duration>,
    /// Most time to spend generating (after the prompt).
    pub generation_time_limit: Duration,
    /// Set when the request is no longer wanted.
    pub cancel: CancelFlag,
    /// Which warm state to use (one per document): the engine keeps the KV cache of
    /// several slots and restores the one a request names.
    pub slot: String,
    /// Receives the text generated so far after every token, when set.
    pub partial: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Work nobody waits for yet (a prefetch), counted apart: see
    /// [`Engine::background_counters`].
    pub background: bool,
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
    /// The generation time limit was reached.
    TimeLimit,
    /// The prompt time limit was reached before generation began.
    PromptTimeLimit,
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
    /// Time spent building the prompt (layout and tokenization).
    pub build_time: Duration,
    /// Time spent on the prompt (restoring the cache and decoding what it lacked).
    pub prompt_time: Duration,
    /// Time spent generating.
    pub generation_time: Duration,
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
    /// Requests answered from the typed-through cache, without the model.
    pub typed_through: AtomicU64,
    /// Prompt tokens reused by moving their KV entries into place (part of `reused`).
    pub prompt_tokens_shifted: AtomicU64,
    /// Requests whose document's saved cache was restored.
    pub warm_restores: AtomicU64,
    /// Tokens drafted for speculative decoding.
    pub drafted_tokens: AtomicU64,
    /// Drafted tokens the model confirmed.
    pub accepted_tokens: AtomicU64,
    /// Time spent on prompts, in microseconds.
    pub prompt_micros: AtomicU64,
    /// Time spent generating, in microseconds.
    pub generation_micros: AtomicU64,
    /// Tokens of the prompts built.
    pub prompt_tokens: AtomicU64,
    /// Tokens of each prompt equal to the same document's previous prompt (its
    /// longest common prefix with it).
    pub prompt_tokens_unchanged: AtomicU64,
    /// Time spent building prompts (layout and tokenization), in microseconds.
    pub prompt_build_micros: AtomicU64,
}

/// The engine's counters, kept twice: for requests someone waits for, and for
/// background work (prefetches), so that neither blurs the other's figures.
#[derive(Debug, Default)]
struct Tallies {
    foreground: Counters,
    background: Counters,
}

impl Tallies {
    fn of(&self, background: bool) -> &Counters {
        if background {
            &self.background
        } else {
            &self.foreground
        }
    }
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
    /// Requests answered from the typed-through cache, without the model.
    pub typed_through: u64,
    /// Prompt tokens reused by moving their KV entries into place (part of `reused`).
    pub prompt_tokens_shifted: u64,
    /// Requests whose document's saved cache was restored.
    pub warm_restores: u64,
    /// Tokens drafted for speculative decoding.
    pub drafted_tokens: u64,
    /// Drafted tokens the model confirmed.
    pub accepted_tokens: u64,
    /// Time spent on prompts, in microseconds.
    pub prompt_micros: u64,
    /// Time spent generating, in microseconds.
    pub generation_micros: u64,
    /// Tokens of the prompts built.
    pub prompt_tokens: u64,
    /// Tokens of each prompt equal to the same document's previous prompt.
    pub prompt_tokens_unchanged: u64,
    /// Time spent building prompts (layout and tokenization), in microseconds.
    pub prompt_build_micros: u64,
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
            typed_through: get(&self.typed_through),
            prompt_tokens_shifted: get(&self.prompt_tokens_shifted),
            warm_restores: get(&self.warm_restores),
            drafted_tokens: get(&self.drafted_tokens),
            accepted_tokens: get(&self.accepted_tokens),
            prompt_micros: get(&self.prompt_micros),
            generation_micros: get(&self.generation_micros),
            prompt_tokens: get(&self.prompt_tokens),
            prompt_tokens_unchanged: get(&self.prompt_tokens_unchanged),
            prompt_build_micros: get(&self.prompt_build_micros),
        }
    }
}

enum Job {
    Complete {
        request: Box<CompletionRequest>,
        reply: oneshot::Sender<Result<Generation, EngineError>>,
    },
    Prompt {
        context: Box<CompletionContext>,
        reply: oneshot::Sender<Result<PromptView, EngineError>>,
    },
}

/// The prompt the model would get for a context, for people and tests to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
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

/// A handle to the engine's worker thread. Cloning shares the same worker.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    state: watch::Receiver<EngineState>,
    tallies: Arc<Tallies>,
}

impl Engine {
    /// Starts the worker, which finds (or fetches) and loads the model in the background.
    pub fn start(settings: Settings) -> Engine {
        let (jobs, job_receiver) = mpsc::channel();
        let (state_sender, state) = watch::channel(EngineState::Loading {
            message: "starting".into(),
            percent: None,
        });
        let tallies = Arc::new(Tallies::default());
        let worker_tallies = tallies.clone();
        std::thread::Builder::new()
            .name("inkling-engine".into())
            .spawn(move || {
                // A panic (in llama-cpp-2's wrappers, say) must not leave clients
                // waiting on a model that is "loading" for ever: it fails the engine,
                // which then answers every request "not ready", and the server goes on.
                let failed = state_sender.clone();
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker(settings, job_receiver, state_sender, worker_tallies)
                }));
                if let Err(panic) = ran {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let message = format!("the engine stopped on an internal error: {why}");
                    tracing::error!("{message}");
                    failed.send_replace(EngineState::Failed(message));
                }
            })
            .expect("spawning the engine thread");
        Engine {
            jobs,
            state,
            tallies,
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

    /// The engine's running totals for requests someone waits for.
    pub fn counters(&self) -> CountersSnapshot {
        self.tallies.foreground.snapshot()
    }

    /// The engine's running totals for background work (prefetches).
    pub fn background_counters(&self) -> CountersSnapshot {
        self.tallies.background.snapshot()
    }

    /// Counts a request answered from the typed-through cache.
    pub fn count_typed_through(&self) {
        let counters = &self.tallies.foreground;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.typed_through.fetch_add(1, Ordering::Relaxed);
    }

    /// Generates a completion. Answers [`EngineError::NotReady`] at once while the model
    /// is not loaded.
    pub async fn complete(&self, request: CompletionRequest) -> Result<Generation, EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotReady);
        }
        let (reply, answer) = oneshot::channel();
        let request = Box::new(request);
        self.send(Job::Complete { request, reply }, answer).await
    }

    /// The prompt the model would get for `context`, laid out and tokenized exactly as
    /// for a completion.
    pub async fn prompt(&self, context: CompletionContext) -> Result<PromptView, EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotReady);
        }
        let (reply, answer) = oneshot::channel();
        let context = Box::new(context);
        self.send(Job::Prompt { context, reply }, answer).await
    }

    async fn send<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let stopped = || EngineError::Failed("the engine thread has stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn worker(
    settings: Settings,
    jobs: mpsc::Receiver<Job>,
    state: watch::Sender<EngineState>,
    tallies: Arc<Tallies>,
) {
    let report = |message: &str, percent: Option<u32>| {
        state.send_replace(EngineState::Loading {
            message: message.to_owned(),
            percent,
        });
    };
    let loaded = (|| {
        let path = match &settings.model {
            Some(model) => model_catalog::resolve(model)?,
            None => model_files::ensure_default_model(&mut |m| report(m, None))?,
        };
        model_check::check(&path, &settings, &mut |m| report(m, None))?;
        report("loading the model", Some(0));
        let backend = LlamaBackend::init().map_err(|e| format!("llama.cpp init failed: {e}"))?;
        let progress_state = state.clone();
        let mut reported = 0;
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(settings.gpu_layers)
            .with_progress_callback(move |p| {
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
        let model = model_check::load_with_reason(
            &format!("cannot load model {}", path.display()),
            || LlamaModel::load_from_file(&backend, &path, &params),
        )?;
        let draft_model = match &settings.speculation {
            Speculation::DraftModel(draft) => {
                let draft = &model_catalog::resolve(draft)?;
                report("loading the draft model", None);
                model_check::check(draft, &settings, &mut |m| report(m, None))?;
                let loaded = model_check::load_with_reason(
                    &format!("cannot load draft model {}", draft.display()),
                    || LlamaModel::load_from_file(&backend, draft, &LlamaModelParams::default()),
                )?;
                check_same_vocabulary(&model, &loaded)?;
                Some(loaded)
            }
            _ => None,
        };
        Ok::<_, String>((backend, model, draft_model, path))
    })();
    let (backend, model, draft_model, path) = match loaded {
        Ok(loaded) => loaded,
        Err(message) => return fail(&state, message, jobs),
    };
    let (context_size, context_warning) = bounded_context(&model, settings.context_size);
    let settings = settings.fit_context(context_size);
    let target = match new_sequence(&model, &backend, &settings) {
        Ok(target) => target,
        Err(message) => return fail(&state, message, jobs),
    };
    let drafter = match (&draft_model, &settings.speculation) {
        (Some(draft_model), _) => match new_sequence(draft_model, &backend, &settings) {
            Ok(sequence) => Drafter::Model(sequence),
            Err(message) => return fail(&state, message, jobs),
        },
        (None, Speculation::PromptLookup) => Drafter::PromptLookup,
        (None, _) => Drafter::Off,
    };
    let vocab = model.vocab();
    let tokenizer = CachingTokenizer::new(VocabTokenizer(model.vocab()));
    let template = match template::resolve(tokenizer.inner(), settings.template.as_deref()) {
        Ok(template) => template,
        Err(e) => return fail(&state, format!("{e}"), jobs),
    };
    let chat_model = model_catalog::is_chat_model(
        model.meta_val_str("tokenizer.chat_template").is_ok(),
        template::detect(tokenizer.inner()).family,
    );
    if chat_model {
        tracing::warn!(model = %path.display(), "{CHAT_MODEL_WARNING}");
    }
    tracing::info!(
        model = %path.display(),
        template = %template.family,
        bos = template.bos.is_some(),
        context_size = settings.context_size,
        threads = settings.threads,
        speculation = ?settings.speculation,
        "model ready"
    );
    state.send_replace(EngineState::Ready(ModelInfo {
        path,
        template: template.family.to_string(),
        context_size: target.context.n_ctx(),
        warnings: context_warning
            .into_iter()
            .chain(chat_model.then(|| CHAT_MODEL_WARNING.to_owned()))
            .collect(),
        placement: placement(&model, settings.gpu_layers),
    }));
    let pieces = vocab
        .tokens()
        .map(|t| vocab.token_to_piece(t, false, None).into_boxed_slice())
        .collect();
    let saved_states = NonZeroUsize::new(settings.warm_states.saturating_sub(1) as usize);
    let mut session = Session {
        target,
        drafter,
        tokenizer,
        vocab,
        pieces,
        template,
        budget: settings.budget,
        slot: String::new(),
        warm: saved_states.map(LruCache::new),
        previous_prompts: HashMap::new(),
        tallies,
        background: false,
    };
    for job in jobs {
        match job {
            Job::Complete { request, reply } => {
                let _ = reply.send(session.run(&request)); // The asker may have gone away.
            }
            Job::Prompt { context, reply } => {
                let _ = reply.send(Ok(session.view(&context)));
            }
        }
    }
}

/// A context for `model` of the configured size, used as one sequence.
fn new_sequence<'m>(
    model: &'m LlamaModel,
    backend: &LlamaBackend,
    settings: &Settings,
) -> Result<Sequence<'m>, String> {
    let threads = settings.threads as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(settings.context_size))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        // Gemma 3's sliding-window cache refuses partial removal and shifting unless
        // it is full-size, and both are what keep the cache across keystrokes.
        .with_swa_full(true);
    let can_shift = can_shift(model);
    let what = format!(
        "cannot create a llama context of {} tokens",
        settings.context_size
    );
    model_check::load_with_reason(&what, || model.new_context(backend, params))
        .map(|context| Sequence::new(context, can_shift))
}

/// The context size to ask llama.cpp for: at most the model's training context, and
/// at most what half of the memory available now can hold as KV cache (a context of
/// a billion tokens would otherwise be allocated, or abort). Says why when it is
/// smaller than `asked`.
fn bounded_context(model: &LlamaModel, asked: u32) -> (u32, Option<String>) {
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let number = |key: &str| {
        model
            .meta_val_str(&format!("{arch}.{key}"))
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    };
    let head = |key: &str| number(&format!("attention.{key}"));
    // Read from the metadata, not `n_ctx_train()`, which panics on values past i32.
    let trained = number("context_length")
        .unwrap_or(u64::from(MAX_CONTEXT_SIZE))
        .clamp(u64::from(MIN_CONTEXT_SIZE), u64::from(MAX_CONTEXT_SIZE)) as u32;
    let n_head = u64::from(model.n_head().max(1));
    let per_head = (model.n_embd().max(1) as u64) / n_head;
    let kv_width = u64::from(model.n_head_kv().max(1)).saturating_mul(
        head("key_length")
            .unwrap_or(per_head)
            .saturating_add(head("value_length").unwrap_or(per_head)),
    );
    // f16 cells, every layer.
    let bytes_per_token = kv_width
        .saturating_mul(u64::from(model.n_layer()))
        .saturating_mul(2)
        .max(1);
    let memory_bound = available_memory().map_or(u64::MAX, |bytes| bytes / 2 / bytes_per_token);
    let limit = u64::from(trained)
        .min(memory_bound)
        .max(u64::from(MIN_CONTEXT_SIZE)) as u32;
    if asked <= limit {
        return (asked, None);
    }
    let why = if u64::from(trained) <= memory_bound {
        format!("the model was trained on {trained}")
    } else {
        format!(
            "its cache would need {} MB, more than half of the memory available",
            u64::from(asked).saturating_mul(bytes_per_token) >> 20
        )
    };
    let warning =
        format!("`contextSize` = {asked} is more than this model can use ({why}); using {limit}");
    tracing::warn!("{warning}");
    (limit, Some(warning))
}

/// Where the model's layers run, for the model-ready line: llama.cpp offloads the
/// first `gpu_layers` layers (capped at the model's) to the first GPU device.
fn placement(model: &LlamaModel, gpu_layers: u32) -> String {
    let gpu = llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .find(|d| {
            matches!(
                d.device_type,
                llama_cpp_2::LlamaBackendDeviceType::Gpu
                    | llama_cpp_2::LlamaBackendDeviceType::IntegratedGpu
            )
        });
    let layers = model.n_layer();
    match gpu {
        Some(device) if gpu_layers >= layers => format!(
            "all {layers} layers on {} ({})",
            device.name, device.description
        ),
        Some(device) if gpu_layers > 0 => format!(
            "{gpu_layers} of {layers} layers on {} ({}), the rest on the CPU",
            device.name, device.description
        ),
        _ => "the CPU".into(),
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes; `None` where there is no such file.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Records a load failure, then answers every request with `NotReady`.
fn fail(state: &watch::Sender<EngineState>, message: String, jobs: mpsc::Receiver<Job>) {
    tracing::error!("{message}");
    state.send_replace(EngineState::Failed(message));
    for job in jobs {
        let _ = match job {
            Job::Complete { reply, .. } => reply.send(Err(EngineError::NotReady)).is_ok(),
            Job::Prompt { reply, .. } => reply.send(Err(EngineError::NotReady)).is_ok(),
        };
    }
}

/// A draft model's tokens must mean what the target's mean: same size, same special
/// tokens, same text for every token.
fn check_same_vocabulary(target: &LlamaModel, draft: &LlamaModel) -> Result<(), String> {
    let (t, d) = (target.vocab(), draft.vocab());
    let same = t.n_tokens() == d.n_tokens()
        && t.bos() == d.bos()
        && t.eos() == d.eos()
        && t.tokens()
            .zip(d.tokens())
            .all(|(a, b)| t.token_to_piece(a, false, None) == d.token_to_piece(b, false, None));
    if same {
        Ok(())
    } else {
        Err("the draft model's vocabulary differs from the model's".into())
    }
}

/// Whether llama.cpp can move this model's cached entries to other positions. It
/// cannot for models with several positions per token (M-RoPE, vision RoPE) nor for
/// Step-3.5's per-layer rotary sizes, and aborts the process if asked: the checks of
/// `llama_memory_can_shift`, which llama-cpp-2 does not expose.
pub fn can_shift(model: &LlamaModel) -> bool {
    let several_positions = matches!(
        model.rope_type(),
        Some(RopeType::MRope | RopeType::IMRope | RopeType::Vision)
    );
    let architecture = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    !several_positions && architecture != "step35"
}

/// Cached tokens matching the prompt that are moved into place rather than
/// recomputed must come in runs of at least this many (llama-server's `--cache-reuse`):
/// shorter runs are not worth a shift, and are more often matches by chance.
pub const MIN_SHIFT_RUN: usize = 64;

/// Most tokens drafted for one verification batch.
pub const MAX_DRAFT: usize = 8;

/// A token picked from a verification batch must lead the runner-up by this many
/// logits; closer calls are decided by decoding one token alone, so that speculative
/// and plain decoding pick the same tokens (their arithmetic rounds differently).
pub const MIN_BATCH_MARGIN: f32 = 0.5;

/// The most likely token and its lead over the runner-up (greedy sampling; the
/// first of equal logits wins).
pub fn greedy(logits: &[f32]) -> (Token, f32) {
    let (mut best, mut best_logit, mut second) = (0, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (id, &logit) in logits.iter().enumerate() {
        if logit > best_logit {
            second = best_logit;
            best = id;
            best_logit = logit;
        } else if logit > second {
            second = logit;
        }
    }
    (best as Token, best_logit - second)
}

/// n-gram lengths tried by prompt lookup, longest first.
const LOOKUP_NGRAMS: std::ops::RangeInclusive<usize> = 2..=4;

/// Prompt lookup: the tokens that followed the most recent earlier occurrence of the
/// last n tokens of `history` (longest n first), at most `max` of them.
pub fn lookup_draft(history: &[Token], max: usize) -> Vec<Token> {
    for n in LOOKUP_NGRAMS.rev() {
        let Some(tail_start) = history.len().checked_sub(n) else {
            continue;
        };
        let tail = &history[tail_start..];
        let found = (0..tail_start)
            .rev()
            .find(|&start| &history[start..start + n] == tail);
        if let Some(start) = found {
            let follow = &history[start + n..(start + n + max).min(history.len())];
            return follow.to_vec();
        }
    }
    Vec::new()
}

/// Most cached tokens a background job (a prefetch) may discard from its slot.
pub const MAX_BACKGROUND_DISCARD: usize = 256;

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// How the cache was brought in line with a prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reuse {
    /// Prompt tokens whose KV entries were kept (the common prefix and shifted runs).
    kept: usize,
    /// Of those, tokens moved into place from later in the cache.
    shifted: usize,
}

/// Why prompt decoding stopped before the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interrupt {
    Cancelled,
    OutOfTime,
}

/// Where a token's logits are in the last decoded batch (-1: the last).

#[derive(Clone, Copy, Debug)]
struct LogitsAt(i32);

/// One llama context used as a single sequence (id 0), with the tokens its KV cache
/// holds, in position order.
struct Sequence<'m> {
    context: LlamaContext<'m>,
    cached: Vec<Token>,
    batch: LlamaBatch<'static>,
    /// Cells were moved and their keys are not re-rotated until the next decode:
    /// the state must not be saved before that, or the rotation is lost.
    shift_pending: bool,
    /// Whether cached runs may be moved (see [`can_shift`]).
    can_shift: bool,
}

impl<'m> Sequence<'m> {
    fn new(context: LlamaContext<'m>, can_shift: bool) -> Sequence<'m> {
        Sequence {
            context,
            cached: Vec::new(),
            batch: LlamaBatch::new(PROMPT_CHUNK.max(MAX_DRAFT + 1), 1),
            shift_pending: false,
            can_shift,
        }
    }

    fn n_ctx(&self) -> usize {
        self.context.n_ctx() as usize
    }

    /// Drops the whole cache.
    fn forget(&mut self) {
        self.context.clear_kv_cache();
        self.cached.clear();
        self.shift_pending = false;
    }

    /// Keeps the first `len` cached tokens.
    fn truncate(&mut self, len: usize) {
        if len >= self.cached.len() {
            return;
        }
        match self
            .context
            .clear_kv_cache_seq(Some(0), Some(len as u32), None)
        {
            Ok(true) => self.cached.truncate(len),
            _ => self.forget(),
        }
    }

    /// Brings the cache in line with `prompt` as far as it can without decoding: keeps
    /// the longest common prefix, then moves later runs of cached tokens that match
    /// the prompt into place (llama-server's `--cache-reuse`), and drops the rest. At
    /// least the prompt's last token is left to decode: its logits start generation.
    /// Only the common prefix is kept when the model's cache cannot shift.
    fn reuse(&mut self, prompt: &[Token]) -> Reuse {
        let limit = prompt.len().saturating_sub(1);
        let common = common_prefix(&self.cached, &prompt[..limit]);
        let (mut head_p, mut head_c) = (common, common);
        let mut shifted = 0;
        while self.can_shift && head_c < self.cached.len() && head_p < limit {
            let run = self.cached[head_c..]
                .iter()
                .zip(&prompt[head_p..limit])
                .take_while(|(a, b)| a == b)
                .count();
            if run < MIN_SHIFT_RUN {
                head_c += 1;
                continue;
            }
            let moved = self
                .context
                .clear_kv_cache_seq(Some(0), Some(head_p as u32), Some(head_c as u32))
                .is_ok_and(|removed| removed)
                && self
                    .context
                    .kv_cache_seq_add(
                        0,
                        Some(head_c as u32),
                        Some((head_c + run) as u32),
                        head_p as i32 - head_c as i32,
                    )
                    .is_ok();
            if !moved {
                self.forget();
                return Reuse::default();
            }
            self.shift_pending = true;
            self.cached.copy_within(head_c..head_c + run, head_p);
            head_p += run;
            head_c += run;
            shifted += run;
        }
        // The cells from `head_p` on are either unmatched or already moved down.
        self.truncate(head_p);
        if self.cached.len() != head_p {
            return Reuse::default();
        }
        Reuse {
            kept: head_p,
            shifted,
        }
    }

    /// Decodes `tokens` after the cached ones, asking for the logits of the last one,
    /// or of every one when `all_logits` (to verify drafts).
    fn decode(&mut self, tokens: &[Token], all_logits: bool) -> Result<LogitsAt, EngineError> {
        self.batch.clear();
        let start = self.cached.len();
        for (i, &token) in tokens.iter().enumerate() {
            let last = i + 1 == tokens.len();
            self.batch
                .add(
                    LlamaToken(token),
                    (start + i) as i32,
                    &[0],
                    all_logits || last,
                )
                .map_err(|e| EngineError::Failed(e.to_string()))?;
        }
        if let Err(e) = self.context.decode(&mut self.batch) {
            // The cache may hold part of the batch now: forget it all to stay consistent.
            self.forget();
            return Err(EngineError::Failed(e.to_string()));
        }
        self.cached.extend_from_slice(tokens);
        self.shift_pending = false;
        Ok(LogitsAt(tokens.len() as i32 - 1))
    }

    /// Decodes what the cache lacks of `prompt`, in chunks; the last token alone, so a
    /// repeated prompt (which reuses all but that token) gets the very same logits and
    /// the same greedy answer as the first time. Stops early, keeping what was decoded,
    /// when `interrupt` says so (asked before each chunk); `Ok(None)` means complete.
    fn fill(
        &mut self,
        prompt: &[Token],
        mut interrupt: impl FnMut() -> Option<Interrupt>,
        mut decoded: impl FnMut(usize),
    ) -> Result<Option<Interrupt>, EngineError> {
        let Some((last, body)) = prompt.split_last() else {
            return Err(EngineError::Failed("empty prompt".into()));
        };
        let from = self.cached.len().min(body.len());
        for chunk in body[from..]
            .chunks(PROMPT_CHUNK)
            .chain([std::slice::from_ref(last)])
        {
            if let Some(reason) = interrupt() {
                return Ok(Some(reason));
            }
            self.decode(chunk, false)?;
            decoded(chunk.len());
        }
        Ok(None)
    }
}

/// Where draft tokens come from.
enum Drafter<'m> {
    Off,
    PromptLookup,
    /// A smaller model with the same vocabulary, in its own context.
    Model(Sequence<'m>),
}

impl Drafter<'_> {
    /// Up to `max` tokens that likely follow `history`; empty when there is no guess
    /// or `stop` says the request should end (a draft model decodes the history).
    fn draft(&mut self, history: &[Token], max: usize, stop: &dyn Fn() -> bool) -> Vec<Token> {
        if max == 0 {
            return Vec::new();
        }
        match self {
            Drafter::Off => Vec::new(),
            Drafter::PromptLookup => lookup_draft(history, max),
            Drafter::Model(sequence) => {
                let drafted = draft_with_model(sequence, history, max, stop);
                drafted.unwrap_or_else(|e| {
                    tracing::debug!("draft model failed: {e}");
                    Vec::new()
                })
            }
        }
    }
}

/// Greedy tokens of the draft model after `history`.
fn draft_with_model(
    sequence: &mut Sequence<'_>,
    history: &[Token],
    max: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Token>, EngineError> {
    if history.len() + max + 1 >= sequence.n_ctx() {
        return Ok(Vec::new());
    }
    sequence.reuse(history);
    let interrupted = sequence.fill(history, || stop().then_some(Interrupt::Cancelled), |_| ())?;
    if interrupted.is_some() {
        return Ok(Vec::new());
    }
    let mut at = LogitsAt(-1);
    let mut draft: Vec<Token> = Vec::with_capacity(max);
    while draft.len() < max {
        let (token, _) = greedy(sequence.context.get_logits_ith(at.0));
        draft.push(token);
        if draft.len() < max {
            at = sequence.decode(&[token], false)?;
        }
    }
    Ok(draft)
}

/// A document's KV cache, saved while another document uses the context.
struct WarmState {
    tokens: Vec<Token>,
    state: SeqState,
}

/// The answer as it is generated: its text, and the request's stop rules and limits.
struct Output<'r> {
    request: &'r CompletionRequest,
    text: Utf8Stream,
    generated: usize,
}

impl Output<'_> {
    /// Adds a token's text; returns why generation must end now, if it must.
    fn push(&mut self, piece: &[u8]) -> Option<StopReason> {
        self.text.push(piece);
        self.generated += 1;
        let text = self.text.as_str();
        let end = self.request.stop.end_of_answer(text, false);
        if let Some(partial) = &self.request.partial {
            let so_far = &text[..end.unwrap_or(text.len())];
            let _ = partial.send(so_far.to_owned()); // The asker may have gone away.
        }
        if end.is_some() {
            Some(StopReason::StopRule)
        } else if self.generated >= self.request.max_tokens as usize {
            Some(StopReason::TokenLimit)
        } else {
            None
        }
    }
}

/// The worker's state once the model is loaded.
struct Session<'m> {
    target: Sequence<'m>,
    drafter: Drafter<'m>,
    vocab: LlamaVocab<'m>,
    tokenizer: CachingTokenizer<VocabTokenizer<'m>>,
    /// The text of every token, by id (for token healing).
    pieces: Vec<Box<[u8]>>,
    template: Template,
    budget: prompt::Budget,
    /// The slot whose tokens `target` holds.
    slot: String,
    /// Other slots' saved caches; `None` when only one slot is kept warm.
    warm: Option<LruCache<String, WarmState>>,
    /// Each slot's last prompt, to count the tokens a keystroke left unchanged.
    previous_prompts: HashMap<String, Vec<Token>>,
    tallies: Arc<Tallies>,
    /// Whether the job being run is background work (counted apart).
    background: bool,
}

impl Session<'_> {
    /// The counters of the job being run.
    fn counters(&self) -> &Counters {
        self.tallies.of(self.background)
    }

    /// Counts the prompt's tokens, those unchanged since the slot's previous prompt
    /// (requests only: background prompts are not compared) and the time it took to
    /// build.
    fn count_prompt(&mut self, slot: &str, prompt: &[Token], build_time: Duration) {
        let previous = self
            .previous_prompts
            .get(slot)
            .filter(|_| !self.background)
            .map_or(&[][..], Vec::as_slice);
        let unchanged = common_prefix(previous, prompt);
        let add = |counter: &AtomicU64, n: usize| counter.fetch_add(n as u64, Ordering::Relaxed);
        add(&self.counters().prompt_tokens, prompt.len());
        add(&self.counters().prompt_tokens_unchanged, unchanged);
        add(
            &self.counters().prompt_build_micros,
            build_time.as_micros() as usize,
        );
        if self.background {
            // Compared against the requests' own prompts only.
            return;
        }
        if self.previous_prompts.len() >= 64 && !self.previous_prompts.contains_key(slot) {
            self.previous_prompts.clear();
        }
        self.previous_prompts
            .insert(slot.to_owned(), prompt.to_vec());
    }

    /// Whether `token` ends generation: the vocabulary's end-of-generation tokens and
    /// the template's stop tokens (CodeLlama's `<EOT>`, file separators).
    fn ends_answer(&self, token: LlamaToken) -> bool {
        self.vocab.is_eog(token) || self.template.stop.contains(&token.0)
    }

    /// Makes `slot` the one in the context: saves the current slot's cache and restores
    /// `slot`'s, if it was saved.
    fn switch_to(&mut self, slot: &str) {
        if self.slot == slot {
            return;
        }
        let previous = std::mem::replace(&mut self.slot, slot.to_owned());
        let Some(warm) = &mut self.warm else {
            self.target.forget();
            return;
        };
        if !self.target.cached.is_empty() && !self.target.shift_pending {
            match self
                .target
                .context
                .state_seq_get(0, LlamaStateSeqFlags::empty())
            {
                Ok(state) => {
                    let tokens = std::mem::take(&mut self.target.cached);
                    warm.put(previous, WarmState { tokens, state });
                }
                Err(e) => tracing::debug!("cache of {previous} not saved: {e}"),
            }
        }
        self.target.forget();
        if let Some(saved) = warm.pop(slot) {
            match self.target.context.state_seq_set(&saved.state, 0) {
                Ok(()) => {
                    self.target.cached = saved.tokens;
                    self.counters()
                        .warm_restores
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!("cache of {slot} not restored: {e}");
                    self.target.forget();
                }
            }
        }
    }

    /// Runs one completion job: counted, cancellable, a panic contained.
    fn run(&mut self, request: &CompletionRequest) -> Result<Generation, EngineError> {
        self.background = request.background;
        self.counters().requests.fetch_add(1, Ordering::Relaxed);
        let result = if request.cancel.is_cancelled() {
            Err(EngineError::Cancelled)
        } else {
            // A panic here (a bug) fails this request, not the worker: the caches are
            // forgotten, since they may no longer match what they hold.
            std::panic::catch_unwind(AssertUnwindSafe(|| self.generate(request))).unwrap_or_else(
                |_| {
                    self.target.forget();
                    if let Drafter::Model(sequence) = &mut self.drafter {
                        sequence.forget();
                    }
                    Err(EngineError::Failed("generation panicked".into()))
                },
            )
        };
        if result == Err(EngineError::Cancelled) {
            self.counters().cancelled.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The prompt for `context`, shown as text.
    fn view(&self, context: &CompletionContext) -> PromptView {
        let prompt = prompt::build(context, &self.template, self.budget, &self.tokenizer);
        let piece = |t: Token| self.vocab.token_to_piece(LlamaToken(t), true, None);
        let text = |tokens: &[Token]| {
            let bytes: Vec<u8> = tokens.iter().flat_map(|&t| piece(t)).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        PromptView {
            template: self.template.family.to_string(),
            text: text(&prompt.tokens),
            pieces: prompt
                .tokens
                .iter()
                .map(|&t| String::from_utf8_lossy(&piece(t)).into_owned())
                .collect(),
            healed: text(prompt.healed.as_slice()),
            tokens: prompt.tokens,
        }
    }

    fn generate(&mut self, request: &CompletionRequest) -> Result<Generation, EngineError> {
        let started = Instant::now();
        self.switch_to(&request.slot);
        let Prompt {
            tokens: prompt,
            healed,
        } = prompt::build(
            &request.context,
            &self.template,
            self.budget,
            &self.tokenizer,
        );
        let build_time = started.elapsed();
        self.count_prompt(&request.slot, &prompt, build_time);
        // The text the first generated token must start with (see `Prompt::healed`).
        let heal = healed.map_or(&[][..], |t| self.piece(t)).to_vec();
        let n_ctx = self.target.n_ctx();
        if prompt.len() + 1 >= n_ctx {
            return Err(EngineError::Failed(format!(
                "the prompt ({} tokens) does not fit the context ({n_ctx} tokens)",
                prompt.len()
            )));
        }
        if self.background {
            // Background work may cost the slot the answer it follows and the cursor
            // line, not the body of its prompt: a request that comes instead would
            // have to decode that again.
            let common = common_prefix(&self.target.cached, &prompt);
            if self.target.cached.len() - common > MAX_BACKGROUND_DISCARD {
                return Err(EngineError::Cancelled);
            }
        }
        let reuse = self.target.reuse(&prompt);
        self.counters()
            .prompt_tokens_reused
            .fetch_add(reuse.kept as u64, Ordering::Relaxed);
        self.counters()
            .prompt_tokens_shifted
            .fetch_add(reuse.shifted as u64, Ordering::Relaxed);
        let (tallies, background) = (self.tallies.clone(), self.background);
        // At least one chunk is decoded whatever the time limit, so that a run of
        // requests that each run out of time still makes progress.
        let mut first_chunk = true;
        let filled = self.target.fill(
            &prompt,
            || {
                let out_of_time = request
                    .prompt_time_limit
                    .is_some_and(|limit| started.elapsed() >= limit);
                if request.cancel.is_cancelled() {
                    Some(Interrupt::Cancelled)
                } else if out_of_time && !std::mem::take(&mut first_chunk) {
                    Some(Interrupt::OutOfTime)
                } else {
                    first_chunk = false;
                    None
                }
            },
            |n| {
                tallies
                    .of(background)
                    .prompt_tokens_evaluated
                    .fetch_add(n as u64, Ordering::Relaxed);
            },
        );
        let prompt_done = started.elapsed();
        let mut output = Output {
            request,
            text: Utf8Stream::default(),
            generated: 0,
        };
        let stop_reason = match filled? {
            None => self.answer(request, &prompt, &heal, &mut output, started + prompt_done)?,
            Some(Interrupt::Cancelled) => return Err(EngineError::Cancelled),
            // What was decoded stays cached: the next request carries on from there.
            Some(Interrupt::OutOfTime) => StopReason::PromptTimeLimit,
        };
        let generation_time = started.elapsed() - prompt_done;
        for (counter, value) in [
            (&self.counters().generated_tokens, output.generated as u64),
            (
                &self.counters().prompt_micros,
                prompt_done.as_micros() as u64,
            ),
            (
                &self.counters().generation_micros,
                generation_time.as_micros() as u64,
            ),
        ] {
            counter.fetch_add(value, Ordering::Relaxed);
        }
        tracing::debug!(
            prompt_tokens = prompt.len(),
            reused = reuse.kept,
            shifted = reuse.shifted,
            generated = output.generated,
            ?stop_reason,
            prompt_ms = prompt_done.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "generation"
        );
        Ok(Generation {
            text: output.text.text,
            prompt_tokens: prompt.len(),
            reused_tokens: reuse.kept,
            generated_tokens: output.generated,
            stop_reason,
            build_time,
            prompt_time: prompt_done,
            generation_time,
        })
    }

    /// Generates the answer after a decoded prompt, with drafts verified in batches
    /// when a drafter is set. Greedy either way: a draft token is kept only when it is
    /// the token the model itself picks at its position.
    fn answer(
        &mut self,
        request: &CompletionRequest,
        prompt: &[Token],
        heal: &[u8],
        output: &mut Output<'_>,
        generation_started: Instant,
    ) -> Result<StopReason, EngineError> {
        let n_ctx = self.target.n_ctx();
        let mut history = prompt.to_vec();
        let mut logits = LogitsAt(-1);
        // The next token, when verifying drafts already revealed it.
        let mut known_next: Option<LlamaToken> = None;
        loop {
            if request.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            if output.generated >= request.max_tokens as usize {
                return Ok(StopReason::TokenLimit);
            }
            if generation_started.elapsed() >= request.generation_time_limit {
                return Ok(StopReason::TimeLimit);
            }
            if self.target.cached.len() + 1 >= n_ctx {
                return Ok(StopReason::ContextFull);
            }
            let token = match known_next.take() {
                Some(token) => token,
                None if output.generated == 0 && !heal.is_empty() => {
                    self.healing_token(heal, logits)
                }
                None => LlamaToken(greedy(self.target.context.get_logits_ith(logits.0)).0),
            };
            if self.ends_answer(token) {
                return Ok(StopReason::EndOfGeneration);
            }
            let piece = self.piece(token.0);
            let piece = if output.generated == 0 {
                &piece[heal.len().min(piece.len())..]
            } else {
                piece
            };
            if let Some(reason) = output.push(piece) {
                return Ok(reason);
            }
            history.push(token.0);
            let room = (request.max_tokens as usize - output.generated)
                .min(n_ctx.saturating_sub(self.target.cached.len() + 2))
                .min(MAX_DRAFT);
            let stop = || {
                request.cancel.is_cancelled()
                    || generation_started.elapsed() >= request.generation_time_limit
            };
            let draft = self.drafter.draft(&history, room, &stop);
            let mut batch = Vec::with_capacity(draft.len() + 1);
            batch.push(token.0);
            batch.extend(&draft);
            let start = self.target.cached.len();
            logits = self.target.decode(&batch, !draft.is_empty())?;
            if draft.is_empty() {
                continue;
            }
            self.counters()
                .drafted_tokens
                .fetch_add(draft.len() as u64, Ordering::Relaxed);
            // Position i of the batch predicts the token after `batch[i]`.
            for (i, &decoded) in batch.iter().enumerate() {
                let (best, margin) = greedy(self.target.context.get_logits_ith(i as i32));
                if margin < MIN_BATCH_MARGIN {
                    // Too close to call from batched arithmetic, which rounds differently
                    // from one-token decoding: decode `decoded` alone and pick from that,
                    // as plain decoding would.
                    self.rewind_to(start + i)?;
                    logits = self.target.decode(&[decoded], false)?;
                    break;
                }
                let Some(&drafted) = draft.get(i) else {
                    known_next = Some(LlamaToken(best));
                    break;
                };
                if best != drafted {
                    // The cache keeps the token and the accepted drafts before this one.
                    self.rewind_to(start + 1 + i)?;
                    known_next = Some(LlamaToken(best));
                    break;
                }
                self.counters()
                    .accepted_tokens
                    .fetch_add(1, Ordering::Relaxed);
                if self.ends_answer(LlamaToken(drafted)) {
                    return Ok(StopReason::EndOfGeneration);
                }
                if let Some(reason) = output.push(self.piece(drafted)) {
                    return Ok(reason);
                }
                history.push(drafted);
            }
        }
    }

    /// Drops the cache after `len` tokens, or fails the request when the model's
    /// cache cannot remove its end (recurrent models): generating on from an
    /// emptied cache would produce nonsense.
    fn rewind_to(&mut self, len: usize) -> Result<(), EngineError> {
        self.target.truncate(len);
        if self.target.cached.len() == len {
            Ok(())
        } else {
            Err(EngineError::Failed(
                "the model's cache cannot be rewound for speculative decoding".into(),
            ))
        }
    }

    fn piece(&self, token: Token) -> &[u8] {
        usize::try_from(token)
            .ok()
            .and_then(|i| self.pieces.get(i))
            .map_or(&[][..], |p| &p[..])
    }

    /// The most likely next token whose text starts with `heal` (greedy, like the sampler).
    fn healing_token(&self, heal: &[u8], at: LogitsAt) -> LlamaToken {
        let logits = self.target.context.get_logits_ith(at.0);
        let mut best: Option<(usize, f32)> = None;
        for (id, &logit) in logits.iter().enumerate() {
            if best.is_none_or(|(_, b)| logit > b) && self.pieces[id].starts_with(heal) {
                best = Some((id, logit));
            }
        }
        // The healed token itself always qualifies, so `best` is set.
        LlamaToken(best.map_or(0, |(id, _)| id as i32))
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
    fn shifting_is_refused_for_models_with_several_positions_per_token() {
        use crate::test_gguf::{load, vocab_file_of};
        for (architecture, expected) in [
            ("llama", true),
            ("gemma3", true),
            ("qwen2vl", false),
            ("qwen3vl", false),
        ] {
            let model = load(&vocab_file_of(architecture, architecture, &["<s>"], true));
            assert_eq!(can_shift(&model), expected, "{architecture}");
        }
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
