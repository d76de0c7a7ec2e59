//! Model files are tried in a child process before the server loads them.
//!
//! llama.cpp ends the whole process (`GGML_ASSERT` → `abort()`) on many malformed
//! model files that pass the GGUF header check: a layer count out of its bounds at
//! load, a NaN normalization epsilon when the first graph is built, and whatever its
//! loader's next bug is. So before the engine loads a model in-process, [`check`]
//! runs this same executable as `inkling check-model PATH` ([`run_child`]), which
//! does what the engine will do: loads the model with llama.cpp, reads its
//! vocabulary and detects its prompt template, creates a small context, decodes a
//! prompt and single tokens (and moves cached entries, where the model allows it),
//! and looks at the logits. The parent waits with a time limit, reads the child's
//! stderr, and when the child fails or dies of a signal refuses the model with
//! llama.cpp's own reason, or the assertion it aborted on.
//!
//! A passing verdict is remembered in the cache directory, keyed by the file's
//! identity (canonical path, device and inode, size, modification and change times)
//! and inkling's version, so the check runs once per model file.
//!
//! [`load_with_reason`] gives in-process loads the same reasons: it records
//! llama.cpp's error lines on the calling thread while a load runs.

use std::fmt::{Debug, Display};
use std::fs;
use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber, span};

use crate::options::EngineOptions;
use crate::vocab::VocabTokenizer;
use inkling_core::template;

use crate::draft::greedy;
use crate::model_files;
use crate::sequence::can_shift;

/// The hidden subcommand the child runs: `inkling check-model [OPTIONS] -- PATH`.
pub const SUBCOMMAND: &str = "check-model";

/// Starts every line the child writes for the parent to read.
const MARKER: &str = "inkling-check: ";

/// Context size of the check: small, since what it looks for does not depend on it.
const CHECK_CONTEXT: u32 = 512;

/// Text decoded by the check, after the BOS token.
const CHECK_TEXT: &str = "def add(a, b):\n    return a";

/// The check's time limit: this, plus a second per [`BYTES_PER_EXTRA_SECOND`] of model.
const BASE_TIMEOUT: Duration = Duration::from_secs(60);
const BYTES_PER_EXTRA_SECOND: u64 = 100 << 20;

/// The file in the cache directory that lists models that passed.
const VERDICTS_FILE: &str = "checked-models";
/// Most verdicts kept (the most recent).
const MAX_VERDICTS: usize = 64;

/// Most bytes of the child's stderr kept (the end).
const MAX_STDERR: usize = 1 << 20;

/// Refuses a path that is not a regular file (a FIFO would block the reader for
/// ever, a directory or device is no model) without opening it.
pub fn regular_file(path: &Path) -> Result<fs::Metadata, String> {
    let shown = path.display();
    let metadata = fs::metadata(path).map_err(|e| format!("cannot open model {shown}: {e}"))?;
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(metadata);
    }
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(format!("model {shown} is {what}, not a model file"))
}

/// The checks of [`check`] that take no time (the name found, a regular file, a sane
/// GGUF header): a model change that fails them can be refused while the model in
/// use is still loaded.
pub fn quick_check(model: &Path) -> Result<(), String> {
    let path = crate::model_catalog::resolve(model)?;
    regular_file(&path)?;
    model_files::validate_gguf(&path).map(drop)
}

/// Checks a model file before it is loaded in-process: a regular file, a sane GGUF
/// header, and a child process that loads and runs it without failing or crashing
/// (once per file: a pass is remembered). `status` hears about the check.
pub fn check(
    path: &Path,
    options: &EngineOptions,
    status: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let metadata = regular_file(path)?;
    model_files::validate_gguf(path)?;
    let Some(exe) = checker() else {
        tracing::warn!(
            "model check skipped: this program is not the inkling binary, which runs it"
        );
        return Ok(());
    };
    let key = verdict_key(path, &metadata, options.gpu_layers);
    let verdicts = model_files::cache_dir().join(VERDICTS_FILE);
    if key.as_deref().is_some_and(|k| passed_before(&verdicts, k)) {
        tracing::debug!(model = %path.display(), "the model passed its check before");
        return Ok(());
    }
    status("checking the model");
    let started = Instant::now();
    let outcome = run_check(&exe, path, options, metadata.len());
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Outcome::Passed => {
            tracing::info!(model = %path.display(), elapsed_ms, "model check passed");
            if let Some(key) = key {
                remember_pass(&verdicts, &key);
            }
            Ok(())
        }
        Outcome::Refused(message) => {
            tracing::debug!(elapsed_ms, "model check failed");
            Err(message)
        }
        Outcome::NotRun(why) => {
            tracing::warn!(
                "the model check could not run ({why}); loading {} without it",
                path.display()
            );
            Ok(())
        }
    }
}

/// The executable to run the check with: this one, when it is the inkling binary
/// (a program that embeds the library, like a benchmark, has no `check-model`).
fn checker() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_str()?;
    let name = name.strip_suffix(" (deleted)").unwrap_or(name);
    if name != "inkling" {
        return None;
    }
    // Still this very binary when its file was replaced or deleted (a rebuild while
    // the server runs).
    let running = Path::new("/proc/self/exe");
    Some(if running.exists() {
        running.to_path_buf()
    } else {
        exe
    })
}

/// What a file is, as far as a verdict goes: its identity and everything that
/// changes when it is written, and what the check depends on. `None` when the path
/// cannot be made canonical.
fn verdict_key(path: &Path, metadata: &fs::Metadata, gpu_layers: u32) -> Option<String> {
    let canonical = fs::canonicalize(path).ok()?;
    Some(format!(
        "v{} gpu={gpu_layers} dev={} ino={} size={} mtime={}.{} ctime={}.{} {:?}",
        env!("CARGO_PKG_VERSION"),
        metadata.dev(),
        metadata.ino(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec(),
        canonical,
    ))
}

fn passed_before(verdicts: &Path, key: &str) -> bool {
    fs::read_to_string(verdicts).is_ok_and(|text| text.lines().any(|line| line == key))
}

/// The file a verdict is about: the quoted path that ends its key (the fields
/// before it hold no quotes, and a quote inside the path is escaped).
fn file_of(key: &str) -> Option<&str> {
    key.find(" \"").map(|at| &key[at..])
}

/// Adds `key` to the verdicts, in place of older ones for the same file (the most
/// recent [`MAX_VERDICTS`] are kept). Written to a temporary file and renamed, so a
/// reader never sees half a file; two servers writing at once may lose one verdict,
/// which only costs a check.
fn remember_pass(verdicts: &Path, key: &str) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = verdicts.parent() {
            fs::create_dir_all(dir)?;
        }
        let text = fs::read_to_string(verdicts).unwrap_or_default();
        let file = file_of(key);
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| *l != key && (file.is_none() || file_of(l) != file))
            .collect();
        lines.push(key);
        let keep = &lines[lines.len().saturating_sub(MAX_VERDICTS)..];
        let temporary = verdicts.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&temporary, keep.join("\n") + "\n")?;
        fs::rename(&temporary, verdicts)
    };
    if let Err(e) = write() {
        tracing::debug!(
            "cannot remember the model check in {}: {e}",
            verdicts.display()
        );
    }
}

/// How a check ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Passed,
    /// The model must not be loaded; the message says why.
    Refused(String),
    /// The check could not run at all (no way to start a child).
    NotRun(String),
}

fn run_check(exe: &Path, path: &Path, options: &EngineOptions, size: u64) -> Outcome {
    let mut command = Command::new(exe);
    command
        .arg(SUBCOMMAND)
        .arg("--threads")
        .arg(check_threads(options.threads).to_string())
        .arg("--gpu-layers")
        .arg(options.gpu_layers.to_string())
        .arg("--")
        .arg(path)
        // ggml would attach gdb for a backtrace before aborting: slow, and noise here.
        .env("GGML_NO_BACKTRACE", "1")
        .env("INKLING_LOG", "warn")
        .stdin(Stdio::null())
        // Never the LSP channel (main moves it off fd 1 anyway).
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; the child dies with the thread that
        // started it (the engine's, which lives as long as the server).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Nothing but stdio for the child: the LSP channel (a dup without
                // close-on-exec) and sockets stay with the server. Kernels before
                // 5.11 refuse the flag; the child then just holds them a while.
                libc::syscall(
                    libc::SYS_close_range,
                    3,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::NotRun(format!("cannot start {}: {e}", exe.display())),
    };
    let stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::Builder::new()
        .name("inkling-model-check".into())
        .spawn(move || read_tail(stderr, MAX_STDERR));
    let timeout = BASE_TIMEOUT + Duration::from_secs(size / BYTES_PER_EXTRA_SECOND);
    let status = wait_with_timeout(&mut child, timeout);
    let output = match reader {
        Ok(reader) => reader.join().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let output = String::from_utf8_lossy(&output);
    tracing::debug!(model = %path.display(), ?status, "model check output:\n{output}");
    match status {
        Ok(Some(status)) => judge(path, status, &output),
        Ok(None) => Outcome::Refused(format!(
            "checking model {} took longer than {} s, so it was not loaded",
            path.display(),
            timeout.as_secs()
        )),
        Err(e) => Outcome::NotRun(format!("cannot wait for the check: {e}")),
    }
}

/// Threads for the check's few tokens: at most half the cores. ggml's threads wait
/// for each other at every operation by spinning, so on a busy machine a thread per
/// core makes a short decode take seconds; what the check looks for does not depend
/// on the thread count.
fn check_threads(configured: u32) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    configured.min(cores / 2).max(1)
}

/// Reads `from` to its end, keeping at most the last `limit` bytes (roughly).
fn read_tail(mut from: impl Read, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match from.read(&mut buffer) {
            Ok(0) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buffer[..n]);
                if kept.len() > 2 * limit {
                    kept.drain(..kept.len() - limit);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return kept,
        }
    }
}

/// The child's exit status, or `None` (the child killed) when it took longer than
/// `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The verdict on a child that ended with `status` after writing `output` to stderr.
fn judge(path: &Path, status: ExitStatus, output: &str) -> Outcome {
    let report = ChildReport::parse(output);
    let shown = path.display();
    if let Some(signal) = status.signal() {
        let doing = report.step.as_deref().unwrap_or("loading");
        let mut message = match (&report.assertion, &report.exception) {
            (Some(assertion), _) => {
                format!("llama.cpp aborted while {doing} {shown}: {assertion}")
            }
            (None, Some(exception)) => {
                format!("llama.cpp aborted while {doing} {shown}: uncaught exception {exception}")
            }
            (None, None) => format!(
                "llama.cpp crashed ({}) while {doing} {shown}",
                signal_name(signal)
            ),
        };
        if let Some(hint) = report.assertion.as_deref().and_then(hint) {
            message = format!("{message} ({hint})");
        }
        let reasons = reasons(&report.llama, true);
        if report.assertion.is_none() && !reasons.is_empty() {
            message = format!("{message}; llama.cpp had reported: {reasons}");
        }
        if signal == libc::SIGKILL && report.assertion.is_none() {
            message.push_str(" (killed: out of memory?)");
        }
        return Outcome::Refused(message);
    }
    if !report.started {
        // Not our check: some other program answered to the name.
        return Outcome::NotRun(format!(
            "the checker exited with {status} without checking anything"
        ));
    }
    if status.success() && report.passed {
        return Outcome::Passed;
    }
    let error = report
        .error
        .unwrap_or_else(|| format!("the check of model {shown} failed ({status})"));
    // llama.cpp's errors explain a failure of its own; its warnings are noise next
    // to the check's own finding (NaN logits).
    let reasons = reasons(&report.llama, false);
    Outcome::Refused(if reasons.is_empty() {
        error
    } else {
        format!("{error}: {reasons}")
    })
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// What an assertion means for someone who has not read llama.cpp, for the ones
/// hostile or broken files are known to trip.
fn hint(assertion: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 6] = [
        (
            "n_layer",
            "the model's layer count (block_count) is out of range",
        ),
        (
            "eps",
            "the model's normalization epsilon is not a non-negative number",
        ),
        ("n_head", "the model's attention head count is out of range"),
        ("n_embd", "the model's embedding length is out of range"),
        ("n_expert", "the model's expert count is out of range"),
        (
            "n_vocab",
            "the model's vocabulary size does not match its tensors",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| assertion.contains(needle))
        .map(|(_, hint)| *hint)
}

/// A warning or error line from llama.cpp's (or ggml's) log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LlamaLine {
    error: bool,
    /// The function that logged it (`llama_model_load`), when the line named one.
    function: String,
    message: String,
}

/// What the child wrote to stderr, taken apart.
#[derive(Debug, Default)]
struct ChildReport {
    /// The check began (so this was our child).
    started: bool,
    /// The check ended well.
    passed: bool,
    /// What the check was doing last ("loading", "decoding with", …).
    step: Option<String>,
    /// The check's own description of its failure.
    error: Option<String>,
    llama: Vec<LlamaLine>,
    /// The message `ggml_abort` printed (`GGML_ASSERT(…) failed`).
    assertion: Option<String>,
    /// An uncaught C++ exception: its type and `what()`.
    exception: Option<String>,
}

impl ChildReport {
    fn parse(output: &str) -> ChildReport {
        let mut report = ChildReport::default();
        for line in output.lines() {
            if let Some(rest) = line.strip_prefix(MARKER) {
                report.started = true;
                if rest == "ok" {
                    report.passed = true;
                } else if let Some(step) = rest.strip_prefix("step: ") {
                    report.step = Some(step.to_owned());
                } else if let Some(error) = rest.strip_prefix("error: ") {
                    report.error = Some(error.to_owned());
                } else if let Some(text) = rest.strip_prefix("llama error: ") {
                    report.llama.push(LlamaLine::parse(true, text));
                } else if let Some(text) = rest.strip_prefix("llama warning: ") {
                    report.llama.push(LlamaLine::parse(false, text));
                }
            } else if let Some(assertion) = abort_message(line) {
                report.assertion = Some(assertion.to_owned());
            } else if let Some(kind) = line
                .strip_prefix("terminate called after throwing an instance of '")
                .and_then(|rest| rest.strip_suffix('\''))
            {
                report.exception = Some(kind.to_owned());
            } else if let Some(what) = line.trim_start().strip_prefix("what():") {
                let kind = report.exception.take().unwrap_or_default();
                report.exception = Some(format!("{kind}: {}", what.trim()));
            }
        }
        report
    }
}

impl LlamaLine {
    /// `function: message`, as the child writes it.
    fn parse(error: bool, text: &str) -> LlamaLine {
        let (function, message) = match text.split_once(": ") {
            Some((function, message)) if is_identifier(function) => (function, message),
            _ => ("", text),
        };
        LlamaLine {
            error,
            function: function.to_owned(),
            message: message.trim().to_owned(),
        }
    }

    fn write(&self) -> String {
        let kind = if self.error { "error" } else { "warning" };
        let text = self.message.trim().replace('\n', " ");
        if self.function.is_empty() {
            format!("llama {kind}: {text}")
        } else {
            format!("llama {kind}: {}: {text}", self.function)
        }
    }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The message of `ggml_abort`'s line, `FILE:LINE: MESSAGE`, with FILE a C or C++ source.
fn abort_message(line: &str) -> Option<&str> {
    let (place, message) = line.split_once(": ")?;
    let (file, number) = place.rsplit_once(':')?;
    let source = [".c", ".cpp", ".h", ".hpp", ".cu", ".m"]
        .iter()
        .any(|extension| file.ends_with(extension));
    (source && !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()))
        .then_some(message.trim())
}

/// The reasons a person can act on, from llama.cpp's log lines: its errors without
/// the generic "failed to load model" ones (unless nothing else is there), each
/// without the logging function's name, at most three, joined by "; ". The last
/// warnings when there are no errors, if `warnings_too`.
fn reasons(lines: &[LlamaLine], warnings_too: bool) -> String {
    let tidy = |line: &LlamaLine| {
        let message = line.message.trim();
        let message = message
            .strip_prefix("error loading model: ")
            .unwrap_or(message);
        // A function name in front ("check_tensor_dims: tensor … has wrong shape").
        let message = match message.split_once(": ") {
            Some((function, rest)) if is_identifier(function) && function.contains('_') => rest,
            _ => message,
        };
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let generic = |text: &str| {
        text == "failed to load model" || text.starts_with("failed to load model from")
    };
    let errors: Vec<String> = lines.iter().filter(|l| l.error).map(tidy).collect();
    let mut chosen: Vec<String> = errors.iter().filter(|t| !generic(t)).cloned().collect();
    if chosen.is_empty() {
        chosen = errors;
    }
    if chosen.is_empty() && warnings_too {
        chosen = lines.iter().rev().take(2).map(tidy).collect();
        chosen.reverse();
    }
    let mut distinct: Vec<String> = Vec::new();
    for reason in chosen {
        if !reason.is_empty() && !distinct.contains(&reason) {
            distinct.push(reason);
        }
    }
    distinct.truncate(3);
    distinct.join("; ")
}

/// Runs `load` (a llama.cpp call) on this thread and, when it fails, says why with
/// llama.cpp's own error lines logged meanwhile: `"{what}: {reasons}"`, never
/// llama-cpp-2's "null result from llama cpp".
pub fn load_with_reason<T, E: Display>(
    what: &str,
    load: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    let (result, lines) = recording(false, load);
    result.map_err(|e| {
        let reasons = reasons(&lines, true);
        let error = e.to_string();
        if !reasons.is_empty() {
            format!("{what}: {reasons}")
        } else if error.contains("null re") {
            format!("{what}: llama.cpp gave no reason (its log on stderr may say more)")
        } else {
            format!("{what}: {error}")
        }
    })
}

/// Runs `f` with llama.cpp's warnings and errors on this thread recorded (and, with
/// `echo`, written to stderr as the child's lines); everything else goes where it
/// went before.
fn recording<T>(echo: bool, f: impl FnOnce() -> T) -> (T, Vec<LlamaLine>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        inner: tracing::dispatcher::get_default(Dispatch::clone),
        max_level: LevelFilter::current(),
        lines: lines.clone(),
        echo,
    };
    let result = tracing::dispatcher::with_default(&Dispatch::new(recorder), f);
    let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
    (result, lines)
}

/// A subscriber that records llama.cpp's warning and error events and passes
/// everything on to the subscriber that was in place (`inner`).
struct Recorder {
    inner: Dispatch,
    max_level: LevelFilter,
    lines: Arc<Mutex<Vec<LlamaLine>>>,
    echo: bool,
}

/// Whether an event is one of llama.cpp's (or ggml's) warnings or errors, as
/// llama-cpp-2 forwards them (target `llama-cpp-2`, field `module`).
fn is_llama_warning(metadata: &Metadata<'_>) -> bool {
    metadata.target() == "llama-cpp-2" && metadata.is_event() && *metadata.level() <= Level::WARN
}

#[derive(Default)]
struct LlamaFields {
    message: String,
    module: String,
}

impl Visit for LlamaFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "module" => self.module = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "module" => self.module = format!("{value:?}"),
            _ => {}
        }
    }
}

impl Subscriber for Recorder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max_level.max(LevelFilter::WARN))
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        is_llama_warning(metadata) || self.inner.enabled(metadata)
    }

    fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &span::Id, values: &span::Record<'_>) {
        self.inner.record(span, values);
    }

    fn record_follows_from(&self, span: &span::Id, follows: &span::Id) {
        self.inner.record_follows_from(span, follows);
    }

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if is_llama_warning(metadata) {
            let mut fields = LlamaFields::default();
            event.record(&mut fields);
            let line = LlamaLine {
                error: *metadata.level() == Level::ERROR,
                function: fields
                    .module
                    .rsplit("::")
                    .next()
                    .filter(|f| is_identifier(f))
                    .unwrap_or_default()
                    .to_owned(),
                message: fields.message.trim().to_owned(),
            };
            if self.echo {
                say(&line.write());
            }
            self.lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
            if self.echo {
                return;
            }
        }
        if self.inner.enabled(metadata) {
            self.inner.event(event);
        }
    }

    fn enter(&self, span: &span::Id) {
        self.inner.enter(span);
    }

    fn exit(&self, span: &span::Id) {
        self.inner.exit(span);
    }

    fn clone_span(&self, id: &span::Id) -> span::Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: span::Id) -> bool {
        self.inner.try_close(id)
    }
}

/// A line for the parent, on stderr (unbuffered: written before any abort).
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{MARKER}{text}");
}

/// `inkling check-model`: tries the model at `path` the way the engine will use it
/// and returns the process's exit code (0: it passed). Reports on stderr, in lines
/// [`check`] reads; llama.cpp may abort the process instead of returning, which is
/// what the check is for.
pub fn run_child(path: &Path, threads: u32, gpu_layers: u32) -> i32 {
    say("step: reading");
    let (result, _) = recording(true, || try_model(path, threads.max(1), gpu_layers));
    match result {
        Ok(()) => {
            say("ok");
            0
        }
        Err(error) => {
            say(&format!("error: {error}"));
            1
        }
    }
}

fn try_model(path: &Path, threads: u32, gpu_layers: u32) -> Result<(), String> {
    let shown = path.display();
    regular_file(path)?;
    model_files::validate_gguf(path)?;
    let backend = LlamaBackend::init().map_err(|e| format!("llama.cpp init failed: {e}"))?;
    say("step: loading");
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    let model = LlamaModel::load_from_file(&backend, path, &params)
        .map_err(|_| format!("cannot load model {shown}"))?;

    say("step: checking the weights of");
    check_weights(path)?;

    say("step: reading the vocabulary of");
    let vocab = model.vocab();
    template::resolve(&VocabTokenizer(model.vocab()), None)
        .map_err(|e| format!("model {shown}: {e}"))?;
    for token in vocab.tokens() {
        let _ = vocab.token_to_piece(token, false, None);
    }
    let mut tokens = Vec::new();
    if vocab.should_add_bos() {
        tokens.push(vocab.bos());
    }
    tokens.extend(vocab.tokenize(CHECK_TEXT.as_bytes(), false, false));
    if tokens.len() < 3 {
        return Err(format!(
            "model {shown} turns text into {} tokens: its vocabulary is broken",
            tokens.len()
        ));
    }
    let can_shift = can_shift(&model);

    say("step: creating a context for");
    let threads = threads as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(CHECK_CONTEXT))
        .with_n_batch(CHECK_CONTEXT)
        .with_n_ubatch(CHECK_CONTEXT)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_swa_full(true);
    let mut context = model
        .new_context(&backend, params)
        .map_err(|_| format!("cannot create a llama context for model {shown}"))?;

    say("step: decoding with");
    // Garbage out usually has a cause in the metadata: name it when there is one.
    let explained = |error: String| match odd_numbers(&model) {
        Some(odd) => format!("model {shown}: {odd}, so it computes nothing useful"),
        None => error,
    };
    let mut batch = LlamaBatch::new(tokens.len() + 1, 1);
    let mut decode = |context: &mut llama_cpp_2::context::LlamaContext<'_>,
                      tokens: &[LlamaToken],
                      start: usize|
     -> Result<Vec<f32>, String> {
        batch.clear();
        for (i, &token) in tokens.iter().enumerate() {
            batch
                .add(token, (start + i) as i32, &[0], i + 1 == tokens.len())
                .map_err(|e| format!("cannot decode with model {shown}: {e}"))?;
        }
        context
            .decode(&mut batch)
            .map_err(|e| format!("decoding with model {shown} failed: {e}"))?;
        let logits = context.get_logits_ith(tokens.len() as i32 - 1).to_vec();
        if logits.iter().any(|l| l.is_nan()) || !logits.iter().any(|l| l.is_finite()) {
            return Err(format!(
                "model {shown} computes NaN or infinite values: its weights or parameters are corrupt"
            ));
        }
        // No language model scores every token alike; a zeroed computation (an
        // infinite epsilon, zeroed weights) does.
        let (low, high) = logits
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &l| {
                (lo.min(l), hi.max(l))
            });
        if high - low < 1e-6 {
            return Err(format!(
                "model {shown} gives every token the same score ({high}): its weights or parameters are corrupt"
            ));
        }
        Ok(logits)
    };
    // The prompt as one batch, then a single token, as the engine decodes them.
    let logits = decode(&mut context, &tokens, 0).map_err(explained)?;
    let mut cached = tokens.len();
    let next = LlamaToken(greedy(&logits).0);
    let logits = decode(&mut context, &[next], cached).map_err(explained)?;
    cached += 1;
    // Moving cached entries (the engine's cache reuse) and saving a document's state
    // (warm states) take their own paths through llama.cpp.
    if can_shift
        && context
            .clear_kv_cache_seq(Some(0), Some(1), Some(2))
            .unwrap_or(false)
        && context.kv_cache_seq_add(0, Some(2), None, -1).is_ok()
    {
        cached -= 1;
        let next = LlamaToken(greedy(&logits).0);
        decode(&mut context, &[next], cached).map_err(explained)?;
    }
    let _ = context.state_seq_get(0, LlamaStateSeqFlags::empty());
    Ok(())
}

/// Checks every tensor's data the way llama.cpp's `check_tensors` option would
/// (which llama-cpp-2 does not expose): `ggml_validate_row_data`, which finds NaN
/// and infinite values in float tensors and in the scales of quantized blocks. Run
/// after llama.cpp has loaded the file, so its tensor list is known to be sound.
fn check_weights(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;

    use llama_cpp_sys_2 as sys;

    let shown = path.display();
    let unreadable = |e: &dyn Display| format!("cannot read the weights of model {shown}: {e}");
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| unreadable(&e))?;
    let file = fs::File::open(path).map_err(|e| unreadable(&e))?;
    let length = file.metadata().map_err(|e| unreadable(&e))?.len() as usize;
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: a valid C string; with `no_alloc` only the metadata and tensor list are read.
    let gguf = unsafe { sys::gguf_init_from_file(c_path.as_ptr(), params) };
    if gguf.is_null() {
        return Err(unreadable(&"llama.cpp cannot read its tensor list"));
    }
    struct Gguf(*mut sys::gguf_context);
    impl Drop for Gguf {
        fn drop(&mut self) {
            // SAFETY: from gguf_init_from_file, freed once.
            unsafe { sys::gguf_free(self.0) }
        }
    }
    let gguf = Gguf(gguf);
    // SAFETY: mapping a whole regular file read-only; unmapped below. A file cut
    // short meanwhile would fault (SIGBUS): the child dies and the model is refused.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length.max(1),
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(unreadable(&std::io::Error::last_os_error()));
    }
    struct Map(*mut libc::c_void, usize);
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: the mapping made above, unmapped once.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }
    let map = Map(map, length.max(1));
    // SAFETY: gguf is a live context; indices are below its tensor count.
    unsafe {
        let data = sys::gguf_get_data_offset(gguf.0);
        for i in 0..sys::gguf_get_n_tensors(gguf.0) {
            let start = data.saturating_add(sys::gguf_get_tensor_offset(gguf.0, i));
            let size = sys::gguf_get_tensor_size(gguf.0, i);
            let name = std::ffi::CStr::from_ptr(sys::gguf_get_tensor_name(gguf.0, i));
            let name = name.to_string_lossy();
            if start.saturating_add(size) > length {
                return Err(format!(
                    "tensor '{name}' of model {shown} lies outside the file: it is truncated or corrupt"
                ));
            }
            let bytes = map.0.cast::<u8>().add(start).cast::<libc::c_void>();
            if !sys::ggml_validate_row_data(sys::gguf_get_tensor_type(gguf.0, i), bytes, size) {
                return Err(format!(
                    "tensor '{name}' of model {shown} holds NaN or infinite values: its weights are corrupt"
                ));
            }
        }
    }
    Ok(())
}

/// A floating-point hyperparameter a working model cannot have: an epsilon (added
/// under a square root) that is not a finite non-negative number, or any float
/// parameter that is NaN or infinite. As "`key` is value".
fn odd_numbers(model: &LlamaModel) -> Option<String> {
    (0..model.meta_count()).find_map(|i| {
        let key = model.meta_key_by_index(i).ok()?;
        if key.starts_with("tokenizer.") {
            return None;
        }
        let text = model.meta_val_str_by_index(i).ok()?;
        let value: f64 = text.trim().parse().ok()?;
        let odd = !value.is_finite() || (key.contains("epsilon") && value < 0.0);
        odd.then(|| format!("`{key}` is {text}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn killed(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    fn refused(outcome: Outcome) -> String {
        match outcome {
            Outcome::Refused(message) => message,
            other => panic!("not refused: {other:?}"),
        }
    }

    const MODEL: &str = "/m/model.gguf";

    #[test]
    fn an_assertion_is_reported_with_the_step_and_a_hint() {
        let output = "inkling-check: step: reading\n\
            inkling-check: step: loading\n\
            2025-01-01T00:00:00.000000Z  WARN llama-cpp-2: something module=\"llama.cpp::x\"\n\
            /root/src/llama.cpp/src/llama-model.cpp:1330: GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS) failed\n";
        let message = refused(judge(Path::new(MODEL), killed(libc::SIGABRT), output));
        assert_eq!(
            message,
            "llama.cpp aborted while loading /m/model.gguf: GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS) failed (the model's layer count (block_count) is out of range)"
        );
        let output = "inkling-check: step: reading\ninkling-check: step: creating a context for\n\
            /x/ggml/src/ggml.c:3021: GGML_ASSERT(eps >= 0.0f) failed\n";
        let message = refused(judge(Path::new(MODEL), killed(libc::SIGABRT), output));
        assert!(
            message.starts_with("llama.cpp aborted while creating a context for /m/model.gguf: GGML_ASSERT(eps >= 0.0f) failed (the model's normalization epsilon"),
            "{message}"
        );
    }

    #[test]
    fn a_crash_without_an_assertion_names_the_signal_and_what_llama_cpp_said() {
        let output = "inkling-check: step: reading\ninkling-check: step: decoding with\n\
            inkling-check: llama error: llama_decode: something odd\n\
            terminate called without an active exception\n";
        let message = refused(judge(Path::new(MODEL), killed(libc::SIGSEGV), output));
        assert_eq!(
            message,
            "llama.cpp crashed (SIGSEGV) while decoding with /m/model.gguf; llama.cpp had reported: something odd"
        );
        let output = "inkling-check: step: reading\ninkling-check: step: loading\n\
            terminate called after throwing an instance of 'std::out_of_range'\n  what():  vector::_M_range_check\n";
        let message = refused(judge(Path::new(MODEL), killed(libc::SIGABRT), output));
        assert_eq!(
            message,
            "llama.cpp aborted while loading /m/model.gguf: uncaught exception std::out_of_range: vector::_M_range_check"
        );
    }

    #[test]
    fn a_refused_load_gives_llama_cpp_s_reasons_without_the_generic_lines() {
        let output = "inkling-check: step: reading\ninkling-check: step: loading\n\
            inkling-check: llama warning: llama_model_loader: some warning\n\
            inkling-check: llama error: gguf_init_from_file_impl: tensor 'output_norm.weight' data is not within the file bounds, model is corrupted or incomplete\n\
            inkling-check: llama error: llama_model_load: error loading model: llama_model_loader: failed to load model from /m/model.gguf\n\
            inkling-check: llama error: llama_model_load_from_file_impl: failed to load model\n\
            inkling-check: error: cannot load model /m/model.gguf\n";
        let message = refused(judge(Path::new(MODEL), exited(1), output));
        assert_eq!(
            message,
            "cannot load model /m/model.gguf: tensor 'output_norm.weight' data is not within the file bounds, model is corrupted or incomplete"
        );
        let output = "inkling-check: step: reading\n\
            inkling-check: llama error: llama_model_load: error loading model: error loading model hyperparameters: key not found in model: gemma3.context_length\n\
            inkling-check: llama error: llama_model_load_from_file_impl: failed to load model\n\
            inkling-check: error: cannot load model /m/model.gguf\n";
        let message = refused(judge(Path::new(MODEL), exited(1), output));
        assert_eq!(
            message,
            "cannot load model /m/model.gguf: error loading model hyperparameters: key not found in model: gemma3.context_length"
        );
    }

    #[test]
    fn a_pass_needs_the_child_to_say_so() {
        let ok = "inkling-check: step: reading\ninkling-check: ok\n";
        assert_eq!(judge(Path::new(MODEL), exited(0), ok), Outcome::Passed);
        // Some other program (no check lines) is no verdict either way.
        assert!(matches!(
            judge(Path::new(MODEL), exited(0), "running 0 tests\n"),
            Outcome::NotRun(_)
        ));
        assert!(matches!(
            judge(Path::new(MODEL), exited(2), "error: unexpected argument\n"),
            Outcome::NotRun(_)
        ));
        // Started but ended without a word: refused, with the status.
        let message = refused(judge(
            Path::new(MODEL),
            exited(3),
            "inkling-check: step: reading\n",
        ));
        assert!(message.contains("failed (exit status: 3)"), "{message}");
    }

    #[test]
    fn load_errors_never_say_null_result() {
        let failed: Result<(), String> =
            load_with_reason("cannot load model x", || Err("null result from llama cpp"));
        let message = failed.unwrap_err();
        assert!(!message.contains("null result"), "{message}");
        assert!(message.starts_with("cannot load model x: "), "{message}");
        let failed: Result<(), String> =
            load_with_reason("cannot load model x", || Err("path is not UTF-8"));
        assert_eq!(
            failed.unwrap_err(),
            "cannot load model x: path is not UTF-8"
        );
    }

    #[test]
    fn recorded_llama_lines_become_reasons() {
        let (_, lines) = recording(false, || {
            tracing::error!(target: "llama-cpp-2", module = "llama.cpp::llama_model_load", "error loading model: bad things");
            tracing::info!(target: "llama-cpp-2", module = "llama.cpp::llama_model_load", "not recorded");
        });
        assert_eq!(
            lines,
            vec![LlamaLine {
                error: true,
                function: "llama_model_load".into(),
                message: "error loading model: bad things".into(),
            }]
        );
        assert_eq!(reasons(&lines, false), "bad things");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("inkling-check-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn paths_that_are_not_regular_files_are_refused_without_opening_them() {
        let dir = temp_dir("kinds");
        let fifo = dir.join("fifo.gguf");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = regular_file(&fifo).unwrap_err();
        assert!(error.contains("named pipe (FIFO)"), "{error}");
        assert!(regular_file(&dir).unwrap_err().contains("a directory"));
        assert!(
            regular_file(Path::new("/dev/null"))
                .unwrap_err()
                .contains("a device")
        );
        let file = dir.join("model.gguf");
        fs::write(&file, b"GGUF").unwrap();
        assert!(regular_file(&file).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verdicts_are_kept_per_file_identity_and_bounded() {
        let dir = temp_dir("verdicts");
        let model = dir.join("model.gguf");
        fs::write(&model, b"GGUF one").unwrap();
        let verdicts = dir.join("cache").join(VERDICTS_FILE);
        let key = verdict_key(&model, &fs::metadata(&model).unwrap(), 0).unwrap();
        assert!(!passed_before(&verdicts, &key));
        remember_pass(&verdicts, &key);
        assert!(passed_before(&verdicts, &key));
        // Rewritten: another size and times, so another key.
        std::thread::sleep(Duration::from_millis(10));
        fs::write(&model, b"GGUF other").unwrap();
        let changed = verdict_key(&model, &fs::metadata(&model).unwrap(), 0).unwrap();
        assert_ne!(key, changed);
        assert!(!passed_before(&verdicts, &changed));
        // A new verdict for the file replaces the old one.
        remember_pass(&verdicts, &changed);
        assert!(passed_before(&verdicts, &changed));
        assert!(!passed_before(&verdicts, &key));
        assert_eq!(fs::read_to_string(&verdicts).unwrap().lines().count(), 1);
        let with_gpu = verdict_key(&model, &fs::metadata(&model).unwrap(), 99).unwrap();
        assert_ne!(changed, with_gpu);
        for i in 0..MAX_VERDICTS + 5 {
            remember_pass(&verdicts, &format!("key {i}"));
        }
        let kept = fs::read_to_string(&verdicts).unwrap();
        assert_eq!(kept.lines().count(), MAX_VERDICTS);
        assert!(
            !passed_before(&verdicts, &changed),
            "the oldest was dropped"
        );
        assert!(passed_before(
            &verdicts,
            &format!("key {}", MAX_VERDICTS + 4)
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
