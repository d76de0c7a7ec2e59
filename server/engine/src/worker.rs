//! The worker thread: loading the model(s) with a bounded context, then running
//! jobs on the one [`Session`] that owns llama.cpp.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use inkling_core::generate::BackendError;
use inkling_core::prompt::CachingTokenizer;
use inkling_core::template;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::watch;

use crate::counters::Tallies;
use crate::draft::{Drafter, MAX_DRAFT};
use crate::jobs::Job;
use crate::model_catalog::{self, CHAT_MODEL_WARNING};
use crate::options::{EngineOptions, MAX_CONTEXT_SIZE, MIN_CONTEXT_SIZE, Speculation};
use crate::sequence::{PROMPT_CHUNK, Sequence, can_shift};
use crate::session::Session;
use crate::state::{EngineState, ModelInfo};
use crate::vocab::VocabTokenizer;
use crate::{model_check, model_files};

/// The saved warm states' byte budget where the memory available is unknown (no
/// `/proc/meminfo`).
const UNKNOWN_MEMORY_STATES_BUDGET: usize = 2 << 30;

/// The worker thread's body: loads the model(s), then runs jobs until every
/// [`crate::Engine`] handle is gone. A load failure is reported in `state`, and every
/// job is then answered [`BackendError::NotReady`].
pub(crate) fn run(
    options: EngineOptions,
    jobs: mpsc::Receiver<Job>,
    state: watch::Sender<EngineState>,
    tallies: Arc<Tallies>,
) {
    let (backend, model, draft_model, path) = match load(&options, &state) {
        Ok(loaded) => loaded,
        Err(message) => return fail(&state, message, jobs),
    };
    // A draft model only speeds generation up: without it the model still serves.
    let (draft_model, mut draft_warning) = match draft_model {
        Some(Ok(draft)) => (Some(draft), None),
        Some(Err(message)) => (None, Some(format!("no draft model: {message}"))),
        None => (None, None),
    };

    let (context_size, context_warning) = bounded_context(&model, options.context_size);
    let options = options.fit_context(context_size);
    let target = match new_sequence(&model, &backend, &options) {
        Ok(target) => target,
        Err(message) => return fail(&state, message, jobs),
    };
    let drafter = match (&draft_model, &options.speculation) {
        (Some(draft_model), _) => match new_sequence(draft_model, &backend, &options) {
            Ok(sequence) => Drafter::Model(sequence),
            Err(message) => {
                draft_warning = Some(format!("no draft model: {message}"));
                Drafter::Off
            }
        },
        (None, Speculation::PromptLookup) => Drafter::PromptLookup,
        (None, _) => Drafter::Off,
    };
    if let Some(warning) = &draft_warning {
        tracing::warn!("{warning}");
    }
    let tokenizer = CachingTokenizer::new(VocabTokenizer(model.vocab()));
    // The setting was checked when read; what only the vocabulary can tell (a
    // family's token it lacks) leaves the layout to detection rather than the model
    // unused.
    let (template, template_warning) =
        match template::resolve(tokenizer.inner(), options.template.as_deref()) {
            Ok(template) => (template, None),
            Err(e) => {
                let detected = template::detect(tokenizer.inner());
                let warning = format!("{e}; using the detected {}", detected.family);
                tracing::warn!("{warning}");
                (detected, Some(warning))
            }
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
        context_size = options.context_size,
        threads = options.threads,
        speculation = ?options.speculation,
        "model ready"
    );
    state.send_replace(EngineState::Ready(ModelInfo {
        path,
        template: template.family.to_string(),
        context_size: target.context.n_ctx(),
        warnings: context_warning
            .into_iter()
            .chain(chat_model.then(|| CHAT_MODEL_WARNING.to_owned()))
            .chain(draft_warning)
            .chain(template_warning)
            .collect(),
        placement: placement(&model, options.gpu_layers),
    }));
    let mut session = Session::new(
        target,
        drafter,
        model.vocab(),
        tokenizer,
        template,
        &options,
        // A quarter of the memory available with the model and its context in.
        available_memory().map_or(UNKNOWN_MEMORY_STATES_BUDGET, |bytes| {
            usize::try_from(bytes / 4).unwrap_or(usize::MAX)
        }),
        tallies,
    );
    for job in jobs {
        match job {
            Job::Complete { request, reply } => {
                let _ = reply.send(session.run(&request)); // The asker may have gone away.
                session.pay_owed_share();
            }
            Job::Prompt { context, reply } => {
                // As for a completion: a panic (a bug) fails this request, not the worker.
                let view = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    session.view(&context)
                }))
                .map_err(|_| BackendError::Failed("building the prompt panicked".into()));
                let _ = reply.send(view);
            }
        }
    }
}

/// What [`load`] brings in: the backend, the model, the draft model if speculation
/// asks for one (or why it could not be loaded), and the model's path.
type Loaded = (
    LlamaBackend,
    LlamaModel,
    Option<Result<LlamaModel, String>>,
    PathBuf,
);

/// Loads the model and the draft model, each file checked first; progress goes to
/// `state`.
fn load(options: &EngineOptions, state: &watch::Sender<EngineState>) -> Result<Loaded, String> {
    let report = |message: &str, percent: Option<u32>| {
        state.send_replace(EngineState::Loading {
            message: message.to_owned(),
            percent,
        });
    };
    let path = match &options.model {
        Some(model) => model_catalog::resolve(model)?,
        None => model_files::ensure_default_model(&mut |m| report(m, None))?,
    };
    model_check::check(&path, options, &mut |m| report(m, None))?;
    report("loading the model", Some(0));
    let backend = LlamaBackend::init().map_err(|e| format!("llama.cpp init failed: {e}"))?;
    let progress_state = state.clone();
    let mut reported = 0;
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(options.gpu_layers)
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
    let model =
        model_check::load_with_reason(&format!("cannot load model {}", path.display()), || {
            LlamaModel::load_from_file(&backend, &path, &params)
        })?;
    let draft_model = match &options.speculation {
        Speculation::DraftModel(draft) => Some((|| {
            let draft = &model_catalog::resolve(draft)?;
            report("loading the draft model", None);
            model_check::check(draft, options, &mut |m| report(m, None))?;
            let loaded = model_check::load_with_reason(
                &format!("cannot load draft model {}", draft.display()),
                || LlamaModel::load_from_file(&backend, draft, &LlamaModelParams::default()),
            )?;
            check_same_vocabulary(&model, &loaded)?;
            Ok(loaded)
        })()),
        _ => None,
    };
    Ok((backend, model, draft_model, path))
}

/// A context for `model` of the configured size, used as one sequence.
fn new_sequence<'m>(
    model: &'m LlamaModel,
    backend: &LlamaBackend,
    options: &EngineOptions,
) -> Result<Sequence<'m>, String> {
    let threads = options.threads as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(options.context_size))
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
        options.context_size
    );
    model_check::load_with_reason(&what, || model.new_context(backend, params))
        .map(|context| Sequence::new(context, can_shift, PROMPT_CHUNK.max(MAX_DRAFT + 1)))
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
            Job::Complete { reply, .. } => reply.send(Err(BackendError::NotReady)).is_ok(),
            Job::Prompt { reply, .. } => reply.send(Err(BackendError::NotReady)).is_ok(),
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
