//! The `inkling` binary: a language server on stdio, and a few maintenance commands.

use std::io::Write;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Parser, Subcommand};
use inkling::config::{Overrides, Settings};
use inkling::suggest::Suggester;
use inkling::{http, lsp, model_files, transport};
use tracing_subscriber::EnvFilter;

/// Inline AI code completions from a local model, over the Language Server Protocol.
///
/// With no command, serves LSP on stdin/stdout. Logs go to stderr; set INKLING_LOG
/// (e.g. `debug`) to change how much. The editor's `initializationOptions`
/// (`model`, `contextSize`, `threads`, `maxTokens`, `postprocess`,
/// `commentCompletions`, `httpPort`, `streamPartial`) override these flags.
#[derive(Parser, Debug)]
#[command(name = "inkling", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// GGUF model to load [default: Gemma-3-270M, fetched once into the cache]
    #[arg(long, value_name = "PATH", global = true)]
    model: Option<PathBuf>,
    /// Context size in tokens [default: 4096]
    #[arg(long, value_name = "TOKENS")]
    ctx_size: Option<NonZeroU32>,
    /// Threads for the model [default: all cores]
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroU32>,
    /// Most tokens generated per completion [default: 128]
    #[arg(long, value_name = "TOKENS")]
    max_tokens: Option<NonZeroU32>,
    /// Also serve the HTTP endpoint on 127.0.0.1 at this port (see `inkling http`)
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
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
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            EnvFilter::try_from_env("INKLING_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=error,tower_lsp_server=warn")),
        )
        .init();
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());

    let flags = Overrides {
        model: cli.model,
        context_size: cli.ctx_size,
        threads: cli.threads,
        max_tokens: cli.max_tokens,
        http_port: cli.http_port,
        ..Overrides::default()
    };
    match cli.command {
        Some(Command::FetchModel) => fetch_model(),
        Some(Command::Http { port }) => serve_http(flags, port),
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

/// Moves the LSP channel off file descriptor 1 and points 1 at stderr, so that
/// nothing else in the process (llama.cpp, ggml, child processes) can write into
/// the JSON-RPC stream. Returns the channel.
fn take_stdout() -> std::io::Result<std::fs::File> {
    // SAFETY: dup/dup2 on the process's own standard descriptors; the new one is owned here.
    unsafe {
        let channel = libc::dup(std::io::stdout().as_raw_fd());
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
        let suggester = Arc::new(Suggester::start(Settings::resolve(flags)));
        http::serve(listener, suggester).await;
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
    // shutdown, or the client closed stdin). Exit at once rather than wait for the
    // engine thread, which may be loading a model.
    std::process::exit(if shutdown_requested.load(Ordering::SeqCst) {
        0
    } else {
        1
    });
}
