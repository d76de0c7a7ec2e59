//! inkling against its complete peer, llama.vim + llama.cpp's `llama-server`, in one
//! run, on the same model and the same keystrokes.
//!
//! The replay types whole lines in the middle of real files (the Python standard
//! library's `textwrap.py` and `shlex.py`, as `typing_replay` does), one keystroke at
//! a time, after opening each file and looking at it for 1–2 s. After each keystroke
//! the user waits until a suggestion is shown, or until the editor's request for that
//! position is answered (none when llama.vim already has the answer), then types on.
//! Accepting is the same for both: when the shown suggestion's first line is not empty
//! and the line being typed continues with it, the user accepts that line (its
//! characters are saved, and the accept is a keystroke too: both editors ask again
//! after it). With `INKLING_BENCH_ACCEPT=partial` the user takes the most of it that
//! is right with the keys both editors have: all of it (Tab), its first line, or its
//! right start word by word (see `Accept::Partial`).
//!
//! - inkling is asked as VS Code and Neovim ask: `didOpen` and `inkling/didFocus` (the
//!   cursor, as our extension and plugin report it), then per keystroke `didChange`, then an automatic
//!   `textDocument/inlineCompletion` per keystroke (answered before the next one, so
//!   cancel-previous never has anything to cancel).
//! - `llama-server` (`scripts/llama-server`, or `$INKLING_LLAMA_SERVER`) runs with
//!   `-t 2 -c 4096 -np 1 --cache-reuse 256 --swa-full` and is asked by llama.vim's
//!   client logic ported to Rust (`inkling_benches::llama_vim`: its LRU of 250
//!   answers, the typed-through look-up 128 characters back, the speculative request
//!   after each shown suggestion, the request pacing and the ring buffer of extra
//!   context). `/infill` refuses a model without FIM tokens (the default model has
//!   none): then the same requests go to `/completion` with the prompt `/infill`
//!   would build, token budgets included, minus the FIM tokens and the text after the
//!   cursor (tokenized through llama-server's `/tokenize`, once per distinct text).
//!
//! Then inkling alone, changed one way at a time on the same keystrokes: without
//! `inkling/didFocus` (how a file just opened was warmed before it: at its first
//! screen), and with a second file (`difflib.py`) opened and focused at the first
//! keystroke of each replay, its warm competing with the typing.
//!
//! Reported for both: latency per keystroke (keystroke to suggestion shown, or to
//! knowing there is none; a client-cache hit is the emulation's own time, well under
//! a millisecond) as mean, p50, p95 and max; the share of keystrokes answered at once
//! from memory (llama.vim's client cache; inkling's typed-through cache), the requests
//! the server got, the characters saved, and the time from the first keystroke in a
//! freshly opened file to the first suggestion shown; then the ratios inkling / peer.
//!
//! `cargo bench -p inkling-benches --bench peer`; environment: `INKLING_BENCH_FILES`
//! (comma-separated stdlib modules, default `textwrap,shlex`),
//! `INKLING_BENCH_KEYSTROKES` (per file, default 160, rounded up to whole lines),
//! `INKLING_BENCH_MODEL` (a GGUF for both; default: inkling's default model),
//! `INKLING_LLAMA_SERVER` (a llama-server binary; default: built by
//! `scripts/llama-server`), `INKLING_BENCH_VERBOSE=1` (each keystroke on stderr),
//! `INKLING_BENCH_ACCEPT` (`line`, the default, or `partial`),
//! `INKLING_BENCH_LOOK_MS` (every pause after opening, instead of 1–2 s),
//! `INKLING_BENCH_OPTIONS` (a JSON object of inkling options, e.g.
//! `{"prefixTokens": 384}`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inkling_benches::llama_server::{
    LlamaServer, llama_server_binary, llama_server_version, tokenize,
};
use inkling_benches::llama_vim::{
    Buffer, InfillBudget, Keystroke, LlamaVim, Random, Source, Transport, completion_without_fim,
};
use inkling_benches::{Latencies, Replay, python_stdlib_file, with_bench_options};
use inkling_harness::http::try_post;
use inkling_harness::{LspClient, default_model_path, inline_items, vscode_capabilities};
use serde_json::{Value, json};

/// An editor asking for suggestions while the user types.
trait Editor {
    /// Opens the file of `replay` (the `n`th) with the cursor where typing starts.
    fn open(&mut self, n: usize, replay: &Replay);
    /// The user looks at the file before typing.
    fn look(&mut self, pause: Duration);
    /// Types `text` at the cursor and waits for the suggestion.
    fn type_text(&mut self, text: &str) -> Keystroke;
    /// The requests the server got, described.
    fn requests(&mut self) -> String;
}

/// inkling over LSP.
struct Inkling {
    client: LspClient,
    uri: String,
    version: i32,
    line: u32,
    column: u32,
    requests: u64,
    stats: Value,
    /// Report the cursor on opening (`inkling/didFocus`), as our extension and plugin do.
    report_focus: bool,
    /// A second file opened (and focused in its middle) at the first keystroke of each
    /// replay, so that its warm competes with the typing.
    second_file: Option<String>,
}

impl Inkling {
    fn start(options: Value) -> Inkling {
        let mut client = LspClient::start();
        client.initialize(vscode_capabilities(), options);
        client.wait_until_ready(Duration::from_secs(600));
        let stats = client.stats();
        Inkling {
            client,
            uri: String::new(),
            version: 0,
            line: 0,
            column: 0,
            requests: 0,
            stats,
            report_focus: true,
            second_file: None,
        }
    }
}

impl Editor for Inkling {
    fn open(&mut self, n: usize, replay: &Replay) {
        self.uri = format!("file:///bench/peer{n}.py");
        let text = replay.opened_text();
        self.client.open(&self.uri, "python", &text);
        (self.version, self.line, self.column) = (1, replay.first_line as u32, 0);
        if self.report_focus {
            // What our VS Code extension and Neovim plugin say when a file becomes active.
            self.client.focus(&self.uri, self.line, self.column);
        }
    }

    fn look(&mut self, pause: Duration) {
        std::thread::sleep(pause);
    }

    fn type_text(&mut self, text: &str) -> Keystroke {
        if let Some(second) = self.second_file.as_ref().filter(|_| self.version == 1) {
            let uri = format!("{}.second.py", self.uri);
            let middle = second.lines().count() as u32 / 2;
            self.client.open(&uri, "python", &second.clone());
            self.client.focus(&uri, middle, 0);
        }
        self.version += 1;
        let at = (self.line, self.column);
        self.client.edit(&self.uri, self.version, at, at, text);
        for part in text.split_inclusive('\n') {
            if part.ends_with('\n') {
                self.line += 1;
                self.column = 0;
            } else {
                self.column += part.encode_utf16().count() as u32;
            }
        }
        let started = Instant::now();
        let id = self
            .client
            .send_inline_completion_triggered(&self.uri, self.line, self.column, 2);
        let response = self.client.response(id, Duration::from_secs(120));
        let latency = started.elapsed();
        self.requests += 1;
        let shown = inline_items(&response)
            .first()
            .and_then(|item| item["insertText"].as_str().map(str::to_owned))
            .filter(|text| !text.is_empty());
        let stats = self.client.stats();
        let from_memory = stats["typedThrough"].as_u64() > self.stats["typedThrough"].as_u64();
        self.stats = stats;
        let source = Source::of(&shown, from_memory);
        Keystroke {
            shown,
            latency,
            source,
        }
    }

    fn requests(&mut self) -> String {
        format!("{} inlineCompletion", self.requests)
    }
}

/// How the `llama-server` started here sizes `/infill` prompts (`-c 4096 -np 1`, and
/// the defaults of `-b` and `-n`).
const BUDGET: InfillBudget = InfillBudget {
    n_batch: 2048,
    n_ctx: 4096,
    n_predict: -1,
};

/// llama.vim's requests over HTTP, one thread each, as llama.vim runs one curl per
/// request.
#[derive(Clone)]
struct Http {
    address: SocketAddr,
    /// `None`: `/infill` as llama.vim sends it; else `/completion` without FIM (see
    /// [`completion_without_fim`]), with the model's BOS token (if it wants one).
    without_fim: Option<Vec<i64>>,
    /// Tokens of texts already tokenized (the text before the cursor changes once a
    /// line, the extra chunks seldom).
    tokens: Arc<Mutex<HashMap<String, Vec<i64>>>>,
}

impl Http {
    /// The tokens of `text` as `/infill` tokenizes input text (no special tokens),
    /// from llama-server's `/tokenize`.
    fn tokenize(&self, text: &str) -> Result<Vec<i64>, String> {
        if let Some(tokens) = self.tokens.lock().unwrap().get(text) {
            return Ok(tokens.clone());
        }
        let body = json!({"content": text, "add_special": false, "parse_special": false});
        let tokens = tokenize(self.address, &body)?;
        self.tokens
            .lock()
            .unwrap()
            .insert(text.to_owned(), tokens.clone());
        Ok(tokens)
    }

    /// The path and body to send for llama.vim's request `infill`.
    fn request(&self, infill: Value) -> Result<(&'static str, Value), String> {
        let Some(bos) = &self.without_fim else {
            return Ok(("/infill", infill));
        };
        let mut failure = None;
        let body = completion_without_fim(infill, BUDGET, bos, &mut |text| {
            self.tokenize(text).unwrap_or_else(|e| {
                failure = Some(e);
                Vec::new()
            })
        });
        failure.map_or(Ok(("/completion", body)), Err)
    }
}

impl Transport for Http {
    fn post(&self, infill: Value, job: u64, done: Sender<(u64, Option<String>)>) {
        let http = self.clone();
        std::thread::spawn(move || {
            let sent = http.request(infill).and_then(|(path, body)| {
                try_post(http.address, path, &body.to_string()).map_err(|e| e.to_string())
            });
            let answer = match sent {
                Ok((200, body)) => Some(body),
                Ok((status, body)) => {
                    eprintln!("llama-server answered {status}: {body}");
                    None
                }
                Err(e) => {
                    eprintln!("llama-server: {e}");
                    None
                }
            };
            let _ = done.send((job, answer));
        });
    }
}

/// llama.vim in front of llama-server.
struct Peer {
    vim: LlamaVim<Http>,
}

impl Editor for Peer {
    fn open(&mut self, n: usize, replay: &Replay) {
        let text = replay.opened_text();
        let name = format!("peer{n}.py");
        self.vim
            .open(Buffer::new(&name, &text, replay.first_line as i64 + 1, 0));
    }

    fn look(&mut self, pause: Duration) {
        self.vim.look(pause);
    }

    fn type_text(&mut self, text: &str) -> Keystroke {
        self.vim.type_text(text)
    }

    fn requests(&mut self) -> String {
        self.vim.settle();
        let r = self.vim.requests;
        format!(
            "{} ({} FIM, {} speculative, {} ring updates; {} not answered)",
            r.fim + r.speculative + r.ring,
            r.fim,
            r.speculative,
            r.ring,
            r.failed
        )
    }
}

/// How llama.vim asks `server`: `/infill` if the model can fill in the middle, else
/// `/completion` without FIM; and that said in words.
fn llama_vim_http(server: &LlamaServer) -> Result<(Http, String), String> {
    let mut http = Http {
        address: server.address,
        without_fim: None,
        tokens: Arc::default(),
    };
    let probe = json!({"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 1});
    let (status, body) = try_post(server.address, "/infill", &probe.to_string())
        .map_err(|e| format!("/infill: {e}"))?;
    if status == 200 {
        return Ok((http, "/infill, as llama.vim sends it".into()));
    }
    let message: Value = serde_json::from_str(&body).unwrap_or_default();
    let reason = message["error"]["message"].as_str().unwrap_or(&body);
    let bos = tokenize(server.address, &json!({"content": "", "add_special": true}))?;
    http.without_fim = Some(bos);
    Ok((
        http,
        format!(
            "/completion: /infill answered {status} ({reason:?}); same fields, prompt = /infill's without FIM tokens and the text after the cursor"
        ),
    ))
}

/// One change to how inkling is asked, with the second file's text at hand.
type Change = fn(&mut Inkling, &str);

/// What a replay measured.
#[derive(Default)]
struct Tally {
    keystrokes: Vec<Keystroke>,
    accepts: usize,
    saved: usize,
    first_shown: Vec<Option<Duration>>,
    requests: String,
    wall_time: Duration,
}

/// How the user takes a suggestion (`INKLING_BENCH_ACCEPT`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accept {
    /// Its first line, whole, or nothing (`line`, the default).
    Line,
    /// The most of it that is right, the way both editors' keys take it (`partial`):
    /// all of it when every line is right (Tab), else its first line (accept-line),
    /// else, while its next word is right, that word (accept-word, one keystroke a
    /// word). A word is what our Neovim plugin's key takes: leading blanks, then a
    /// run of word characters or a run of other characters; one of a single
    /// character, its blanks counted, is typed rather than accepted.
    Partial,
}

impl Accept {
    fn from_env() -> Accept {
        match std::env::var("INKLING_BENCH_ACCEPT").as_deref() {
            Ok("partial") => Accept::Partial,
            Ok("line") | Err(_) => Accept::Line,
            Ok(other) => panic!("INKLING_BENCH_ACCEPT={other}: expected line or partial"),
        }
    }

    /// The part of `suggestion` the user accepts when `rest` is what is left to
    /// type.
    fn part<'a>(self, suggestion: &'a str, rest: &[char]) -> Option<&'a str> {
        let first = suggestion.split('\n').next().unwrap_or_default();
        let line: String = rest.iter().take_while(|c| **c != '\n').collect();
        if self == Accept::Partial && suggestion.len() > first.len() {
            let ahead: String = rest.iter().take(suggestion.chars().count()).collect();
            if ahead == suggestion {
                return Some(suggestion);
            }
        }
        if !first.is_empty() && line.starts_with(first) {
            return Some(first);
        }
        let word = next_word(first);
        (self == Accept::Partial && word.chars().count() > 1 && line.starts_with(word))
            .then_some(word)
    }
}

/// The next word of `text`: leading blanks, then a run of word characters or a run
/// of other non-blank characters.
fn next_word(text: &str) -> &str {
    let blanks = text.len() - text.trim_start().len();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let rest = &text[blanks..];
    let word = rest.chars().next().is_some_and(is_word);
    let end = rest
        .find(|c: char| c.is_whitespace() || is_word(c) != word)
        .unwrap_or(rest.len());
    &text[..blanks + end]
}

/// Types every replay into `editor`.
fn replay(
    editor: &mut impl Editor,
    replays: &[Replay],
    pauses: &[Duration],
    accept: Accept,
) -> Tally {
    let verbose = std::env::var_os("INKLING_BENCH_VERBOSE").is_some();
    let started = Instant::now();
    let mut tally = Tally::default();
    for (n, (replay, pause)) in replays.iter().zip(pauses).enumerate() {
        editor.open(n, replay);
        editor.look(*pause);
        let typed = &replay.typed;
        let first_keystroke = Instant::now();
        let mut first_shown = None;
        let mut i = 0;
        let mut next = Some(typed[0].to_string());
        while let Some(text) = next.take() {
            let keystroke = editor.type_text(&text);
            i += text.chars().count();
            if verbose {
                eprintln!(
                    "{text:?} -> {:?} {:?} {:?}",
                    keystroke.latency, keystroke.source, keystroke.shown
                );
            }
            if keystroke.shown.is_some() && first_shown.is_none() {
                first_shown = Some(first_keystroke.elapsed());
            }
            if let Some(part) = keystroke
                .shown
                .as_deref()
                .and_then(|s| accept.part(s, &typed[i..]))
            {
                tally.accepts += 1;
                tally.saved += part.chars().count();
                next = Some(part.to_owned());
            } else if i < typed.len() {
                next = Some(typed[i].to_string());
            }
            tally.keystrokes.push(keystroke);
        }
        tally.first_shown.push(first_shown);
    }
    tally.requests = editor.requests();
    tally.wall_time = started.elapsed();
    tally
}

/// The numbers compared.
struct Summary {
    mean: Duration,
    p50: Duration,
    p95: Duration,
    max: Duration,
    from_memory: usize,
    shown: usize,
}

fn summarize(tally: &Tally) -> Summary {
    let latency = Latencies::of(tally.keystrokes.iter().map(|k| k.latency));
    Summary {
        mean: latency.mean,
        p50: latency.p50,
        p95: latency.p95,
        max: latency.max,
        from_memory: tally
            .keystrokes
            .iter()
            .filter(|k| k.source == Source::Cache)
            .count(),
        shown: tally
            .keystrokes
            .iter()
            .filter(|k| k.shown.is_some())
            .count(),
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `a / b`; "-" when `b` is zero or, for latencies, under a millisecond (a ratio of
/// two cache hits' microseconds says nothing).
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn first_shown(tally: &Tally) -> String {
    tally
        .first_shown
        .iter()
        .map(|d| d.map_or("none".into(), ms))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(typed: usize, inkling: &Tally, peer: Option<&Tally>) {
    let row = |label: &str, a: String, b: String, r: String| {
        println!("  {label:<38} {a:>16}   {b:>28}   {r:>8}");
    };
    let s = summarize(inkling);
    let p = peer.map(summarize);
    let other = |f: &dyn Fn(&Summary, &Tally) -> String| match (&p, peer) {
        (Some(p), Some(t)) => f(p, t),
        _ => "not run".into(),
    };
    let rate = |f: &dyn Fn(&Summary) -> f64| {
        p.as_ref()
            .filter(|p| f(p) >= 0.001)
            .map_or("-".into(), |p| ratio(f(&s), f(p)))
    };
    println!();
    row(
        "",
        "inkling".into(),
        "llama.vim + llama-server".into(),
        "ink/peer".into(),
    );
    let pct = |n: usize, of: usize| format!("{n} ({:.0}%)", 100.0 * n as f64 / of.max(1) as f64);
    row(
        "keystrokes (typed + accepts)",
        format!("{}", inkling.keystrokes.len()),
        other(&|_, t| format!("{}", t.keystrokes.len())),
        String::new(),
    );
    for (label, f) in [
        (
            "latency per keystroke: mean",
            (|s: &Summary| s.mean) as fn(&Summary) -> Duration,
        ),
        ("latency per keystroke: p50", |s| s.p50),
        ("latency per keystroke: p95", |s| s.p95),
        ("latency per keystroke: max", |s| s.max),
    ] {
        row(
            label,
            ms(f(&s)),
            other(&|p, _| ms(f(p))),
            rate(&|x| f(x).as_secs_f64()),
        );
    }
    row(
        "answered at once from memory",
        pct(s.from_memory, inkling.keystrokes.len()),
        other(&|p, t| pct(p.from_memory, t.keystrokes.len())),
        String::new(),
    );
    row(
        "keystrokes with a suggestion shown",
        pct(s.shown, inkling.keystrokes.len()),
        other(&|p, t| pct(p.shown, t.keystrokes.len())),
        String::new(),
    );
    row(
        "chars saved (of chars to type)",
        pct(inkling.saved, typed),
        other(&|_, t| pct(t.saved, typed)),
        peer.map_or("-".into(), |t| ratio(inkling.saved as f64, t.saved as f64)),
    );
    row(
        "accepts (lines, or words)",
        format!("{}", inkling.accepts),
        other(&|_, t| format!("{}", t.accepts)),
        String::new(),
    );
    row(
        "first suggestion after opening",
        first_shown(inkling),
        other(&|_, t| first_shown(t)),
        String::new(),
    );
    row(
        "replay wall time",
        format!("{:.0} s", inkling.wall_time.as_secs_f64()),
        other(&|_, t| format!("{:.0} s", t.wall_time.as_secs_f64())),
        String::new(),
    );
    println!("  requests to inkling: {}", inkling.requests);
    if let Some(peer) = peer {
        println!("  requests to llama-server: {}", peer.requests);
    }
}

fn main() {
    let modules = std::env::var("INKLING_BENCH_FILES").unwrap_or_else(|_| "textwrap,shlex".into());
    let keystrokes = std::env::var("INKLING_BENCH_KEYSTROKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    let replays: Vec<Replay> = modules
        .split(',')
        .map(|m| Replay::of(m.trim(), keystrokes))
        .collect();
    let typed: usize = replays.iter().map(|r| r.typed.len()).sum();
    let mut random = Random::new(2026);
    let look: Option<u64> = std::env::var("INKLING_BENCH_LOOK_MS")
        .ok()
        .map(|ms| ms.parse().expect("INKLING_BENCH_LOOK_MS: milliseconds"));
    let pauses: Vec<Duration> = replays
        .iter()
        .map(|_| Duration::from_millis(look.unwrap_or_else(|| random.between(1000, 2000) as u64)))
        .collect();
    let model = std::env::var("INKLING_BENCH_MODEL").unwrap_or_else(|_| default_model_path());
    let accept = Accept::from_env();
    println!(
        "peer benchmark: {} ({typed} characters to type), pauses after opening {:?} ms; accepting {}; model {model}",
        Replay::names(&replays),
        pauses.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        match accept {
            Accept::Line => "whole first lines",
            Accept::Partial =>
                "all of a suggestion if right, else its first line, else word by word",
        },
    );

    // Built (or found) first, so that a build never runs during a measurement.
    let binary = llama_server_binary();

    let mut inkling = Inkling::start(with_bench_options(json!({"model": model, "threads": 2})));
    let inkling_tally = replay(&mut inkling, &replays, &pauses, accept);
    inkling.client.shutdown_and_exit();

    let log = std::env::temp_dir().join("inkling-peer-llama-server.log");
    let peer = binary.and_then(|binary| {
        let version = llama_server_version(&binary);
        let server = LlamaServer::start(&binary, &model, &log)?;
        let (http, how) = llama_vim_http(&server)?;
        println!(
            "llama-server: {} ({version}), {}, asked at {how}; log {}",
            binary.display(),
            LlamaServer::FLAGS.join(" "),
            log.display()
        );
        let mut peer = Peer {
            vim: LlamaVim::new(http, 1),
        };
        let tally = replay(&mut peer, &replays, &pauses, accept);
        println!(
            "  llama.vim's cache at the end: {} answers; ring {} chunks, {} evicted",
            peer.vim.cached_answers(),
            peer.vim.ring_len(),
            peer.vim.evicted
        );
        Ok(tally)
    });
    if let Err(reason) = &peer {
        println!("\nllama-server NOT RUN: {reason}. Only inkling's side is reported.");
    }
    report(typed, &inkling_tally, peer.as_ref().ok());

    // inkling alone, changed one way at a time, on the same keystrokes.
    let second = std::fs::read_to_string(python_stdlib_file("difflib")).expect("difflib.py");
    let variants: [(&str, Change); 2] = [
        (
            "without inkling/didFocus (a file just opened is warmed at its first screen)",
            |i, _| i.report_focus = false,
        ),
        (
            "difflib.py opened and focused at each replay's first keystroke",
            |i, second| i.second_file = Some(second.to_owned()),
        ),
    ];
    println!("\ninkling alone, one change at a time (same keystrokes and pauses):");
    println!(
        "  {:<78} {:>8} {:>8} {:>8} {:>8}   first suggestion after opening",
        "", "mean", "p50", "p95", "saved"
    );
    let line = |label: &str, tally: &Tally| {
        let s = summarize(tally);
        println!(
            "  {label:<78} {:>8} {:>8} {:>8} {:>8}   {}",
            ms(s.mean),
            ms(s.p50),
            ms(s.p95),
            tally.saved,
            first_shown(tally)
        );
    };
    line("as above", &inkling_tally);
    for (label, change) in variants {
        let mut inkling = Inkling::start(with_bench_options(json!({"model": model, "threads": 2})));
        change(&mut inkling, &second);
        let tally = replay(&mut inkling, &replays, &pauses, accept);
        inkling.client.shutdown_and_exit();
        line(label, &tally);
    }
}
