//! Load and soak: the real server and default model under request/cancel storms,
//! unthrottled edits and a long editing session, checking that every request is
//! answered exactly once, that the server's copy of each document equals the
//! client's, and that resident memory stays flat.
//!
//! Four parts, each on a server of its own:
//!
//! - **cancel**: 1,000 cycles of `textDocument/inlineCompletion` followed, 0–50 ms
//!   later, by `$/cancelRequest` for it; every request must be answered exactly once
//!   (a result, or error -32800), and the server must serve after.
//! - **edits**: 10,000 random incremental edits (ASCII code, accents, CJK, Hangul,
//!   emoji with ZWJ and flags, combining marks, `\r\n`, lone `\r`, U+2028, U+0085,
//!   several changes per notification) sent without waiting, an inline-completion
//!   request every ~100 edits; then the server's text (through `inkling/prompt`, the
//!   cursor at the end of the small document) must equal the client's. Once with
//!   UTF-16 positions, once with UTF-8.
//! - **soak**: an editing session over several real files (more than `warmStates`):
//!   typing at random places, automatic completions while typing (waited for, some
//!   accepted), backspacing, pasting and undoing blocks, switching documents,
//!   closing and reopening them; resident memory sampled as it goes, and every line
//!   of every document checked against the client's copy at the end.
//! - **large**: opening and closing a 20 MB document three times, requests on it and
//!   after it; resident memory after each step.
//!
//! `cargo bench -p inkling-benches --bench soak`; environment:
//!
//! - `INKLING_SOAK_SCALE`: multiplies the soak's 2,500 edits and ~200 completions
//!   (default 1);
//! - `INKLING_SOAK_PARTS`: a comma-separated subset of `cancel,edits,soak,large`;
//! - `INKLING_SOAK_SEED`: the random edits' seed (default fixed);
//! - `INKLING_SOAK_OPTIONS`: a JSON object merged into every server's
//!   `initializationOptions` (e.g. `{"warmStates": 1}`);
//! - `INKLING_SOAK_SERVER_ENV`: comma-separated `K=V` for the server's environment
//!   (e.g. `MALLOC_ARENA_MAX=1`);
//! - `INKLING_SOAK_LARGE_ROUNDS`: rounds of the 20 MB document (default 3);
//! - `INKLING_SOAK_MALLOC_TRIM=1`: also measure RSS after the server's
//!   `malloc_trim(0)`, called through gdb (what stays is live memory or
//!   fragmentation, not free memory the allocator keeps).
//!
//! Exits with status 1 when a check fails, after printing every result.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use inkling_benches::{python_stdlib_file, quantile};
use inkling_harness::{Launch, LspClient, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------
// Small tools: random numbers, /proc, the response tracker.

/// xorshift64*: reproducible random edits without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A field of `/proc/PID/status` in KiB (or a count), 0 when the process is gone.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

/// Resident memory of `pid` after asking its allocator to give back what it holds
/// free (`malloc_trim(0)` through gdb), when `INKLING_SOAK_MALLOC_TRIM` is set and
/// gdb can attach: what RSS keeps after it is live memory, not the allocator's cache.
fn trimmed_rss_kib(pid: u32) -> Option<u64> {
    std::env::var_os("INKLING_SOAK_MALLOC_TRIM")?;
    let status = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (int) malloc_trim(0)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| rss_kib(pid))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether process `pid` is running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|state| !state.trim_start().starts_with('Z'))
    })
}

fn is_response(message: &Value) -> bool {
    message.get("id").is_some() && message.get("method").is_none()
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    /// A result with at least one suggestion.
    Suggestion,
    /// A result without one (`null`, or no items).
    Empty,
    /// Error -32800, request cancelled.
    Cancelled,
    /// Any other error.
    OtherError(i64),
}

fn outcome(response: &Value) -> Outcome {
    match response.get("error") {
        Some(error) => match error["code"].as_i64().unwrap_or(0) {
            -32800 => Outcome::Cancelled,
            code => Outcome::OtherError(code),
        },
        None if inline_items(response).is_empty() => Outcome::Empty,
        None => Outcome::Suggestion,
    }
}

/// Every response the server sent, by request id, and every other message.
#[derive(Default)]
struct Tracker {
    sent: HashMap<i64, Instant>,
    answers: HashMap<i64, Vec<(Instant, Value)>>,
    /// Responses to ids this tracker never sent (the harness's own requests are
    /// waited for by the harness and never reach here).
    strangers: Vec<Value>,
    notifications: Vec<Value>,
}

impl Tracker {
    fn sent(&mut self, id: i64) {
        self.sent.insert(id, Instant::now());
    }

    /// Takes what has arrived, without waiting.
    fn poll(&mut self, client: &mut LspClient) {
        let now = Instant::now();
        for message in client.drain_backlog() {
            if !is_response(&message) {
                self.notifications.push(message);
                continue;
            }
            match message["id"]
                .as_i64()
                .filter(|id| self.sent.contains_key(id))
            {
                Some(id) => self.answers.entry(id).or_default().push((now, message)),
                None => self.strangers.push(message),
            }
        }
    }

    /// Waits until request `id` is answered; its first answer, or `None` on timeout.
    fn wait(&mut self, client: &mut LspClient, id: i64, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll(client);
            if let Some(answers) = self.answers.get(&id) {
                return Some(answers[0].1.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until every request sent is answered (or `timeout`), then asks the
    /// server something and waits a little more, so that a second answer to any of
    /// them would have arrived.
    fn settle(&mut self, client: &mut LspClient, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll(client);
            let pending = self.sent.keys().any(|id| !self.answers.contains_key(id));
            if !pending || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        client.stats();
        std::thread::sleep(Duration::from_millis(500));
        self.poll(client);
    }

    /// Requests answered more than once, and never.
    fn answered_twice(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .answers
            .iter()
            .filter(|(_, a)| a.len() > 1)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    fn never_answered(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .sent
            .keys()
            .filter(|id| !self.answers.contains_key(id))
            .copied()
            .collect();
        ids.sort();
        ids
    }

    /// How the requests were answered (first answers).
    fn outcomes(&self) -> Vec<(Outcome, usize)> {
        let mut counts: HashMap<Outcome, usize> = HashMap::new();
        for answers in self.answers.values() {
            *counts.entry(outcome(&answers[0].1)).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort();
        counts
    }

    /// Warnings the server logged about edits it could not apply.
    fn rejected_edits(&self) -> Vec<String> {
        self.notifications
            .iter()
            .filter(|m| m["method"] == "window/logMessage" || m["method"] == "window/showMessage")
            .filter_map(|m| m["params"]["message"].as_str())
            .filter(|text| text.contains("not applied"))
            .map(str::to_owned)
            .collect()
    }

    /// One line: requests, how they were answered, and the exactly-once verdict.
    fn describe(&self) -> String {
        let outcomes: Vec<String> = self
            .outcomes()
            .into_iter()
            .map(|(outcome, n)| match outcome {
                Outcome::Suggestion => format!("{n} with a suggestion"),
                Outcome::Empty => format!("{n} empty"),
                Outcome::Cancelled => format!("{n} cancelled (-32800)"),
                Outcome::OtherError(code) => format!("{n} error {code}"),
            })
            .collect();
        format!(
            "{} requests: {}; answered twice: {}, never: {}, unknown ids: {}",
            self.sent.len(),
            outcomes.join(", "),
            self.answered_twice().len(),
            self.never_answered().len(),
            self.strangers.len()
        )
    }

    /// The exactly-once checks, as failures.
    fn check(&self, part: &str, failures: &mut Vec<String>) {
        let twice = self.answered_twice();
        if !twice.is_empty() {
            failures.push(format!(
                "{part}: {} requests answered more than once, e.g. {:?}: {:?}",
                twice.len(),
                &twice[..twice.len().min(5)],
                self.answers[&twice[0]]
                    .iter()
                    .map(|(_, m)| m)
                    .collect::<Vec<_>>()
            ));
        }
        let never = self.never_answered();
        if !never.is_empty() {
            failures.push(format!(
                "{part}: {} requests never answered, e.g. {:?}",
                never.len(),
                &never[..never.len().min(5)]
            ));
        }
        if !self.strangers.is_empty() {
            failures.push(format!(
                "{part}: {} responses to ids never sent, e.g. {}",
                self.strangers.len(),
                self.strangers[0]
            ));
        }
        for (outcome, n) in self.outcomes() {
            if let Outcome::OtherError(code) = outcome {
                failures.push(format!("{part}: {n} requests answered with error {code}"));
            }
        }
        let rejected = self.rejected_edits();
        if !rejected.is_empty() {
            failures.push(format!(
                "{part}: {} edits not applied, e.g. {}",
                rejected.len(),
                rejected[0]
            ));
        }
    }
}

// ---------------------------------------------------------------------------------
// The client's copy of a document: the oracle.

/// A document as the client has it, with LSP positions (`\n`, `\r\n` and `\r` end
/// lines) in UTF-16 or UTF-8 code units.
struct Doc {
    uri: String,
    language: &'static str,
    text: Vec<char>,
    version: i32,
    utf8: bool,
}

impl Doc {
    fn new(uri: &str, language: &'static str, text: &str, utf8: bool) -> Doc {
        Doc {
            uri: uri.to_owned(),
            language,
            text: text.chars().collect(),
            version: 1,
            utf8,
        }
    }

    fn string(&self) -> String {
        self.text.iter().collect()
    }

    fn open(&mut self, client: &mut LspClient) {
        self.version += 1;
        client.notify(
            "textDocument/didOpen",
            json!({"textDocument": {
                "uri": self.uri, "languageId": self.language,
                "version": self.version, "text": self.string(),
            }}),
        );
    }

    fn close(&self, client: &mut LspClient) {
        client.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": self.uri}}),
        );
    }

    fn units(&self, c: char) -> u32 {
        if self.utf8 {
            c.len_utf8() as u32
        } else {
            c.len_utf16() as u32
        }
    }

    /// Whether char index `i` lies between the `\r` and the `\n` of a line break,
    /// where no LSP position can point.
    fn inside_crlf(&self, i: usize) -> bool {
        i > 0 && i < self.text.len() && self.text[i - 1] == '\r' && self.text[i] == '\n'
    }

    /// The nearest index at or before `i` that a position can name.
    fn floor(&self, i: usize) -> usize {
        let i = i.min(self.text.len());
        if self.inside_crlf(i) { i - 1 } else { i }
    }

    /// The LSP position of char index `index`.
    fn position(&self, index: usize) -> (u32, u32) {
        let (mut line, mut column) = (0, 0);
        for (i, &c) in self.text[..index].iter().enumerate() {
            match c {
                '\n' => (line, column) = (line + 1, 0),
                '\r' if self.text.get(i + 1) == Some(&'\n') => {}
                '\r' => (line, column) = (line + 1, 0),
                c => column += self.units(c),
            }
        }
        (line, column)
    }

    /// Char index of the start of each line.
    fn line_starts(&self) -> Vec<usize> {
        let mut starts = vec![0];
        for (i, &c) in self.text.iter().enumerate() {
            let ends_line = c == '\n' || (c == '\r' && self.text.get(i + 1) != Some(&'\n'));
            if ends_line {
                starts.push(i + 1);
            }
        }
        starts
    }

    /// Char index where line `line` ends (before its break).
    fn line_end(&self, starts: &[usize], line: usize) -> usize {
        let mut end = starts.get(line + 1).copied().unwrap_or(self.text.len());
        if end > starts[line] && line + 1 < starts.len() {
            end -= 1; // the break's last char
            if end > starts[line] && self.text[end] == '\n' && self.text[end - 1] == '\r' {
                end -= 1;
            }
        }
        end
    }

    /// Replaces chars `from..to` by `text` in the copy; returns the LSP change.
    fn change(&mut self, from: usize, to: usize, text: &str) -> Value {
        let (start, end) = (self.position(from), self.position(to));
        self.text.splice(from..to, text.chars());
        json!({
            "range": {"start": {"line": start.0, "character": start.1},
                      "end": {"line": end.0, "character": end.1}},
            "text": text,
        })
    }

    /// Sends `changes` as one `didChange`.
    fn send(&mut self, client: &mut LspClient, changes: Vec<Value>) {
        self.version += 1;
        client.notify(
            "textDocument/didChange",
            json!({
                "textDocument": {"uri": self.uri, "version": self.version},
                "contentChanges": changes,
            }),
        );
    }

    /// One change, sent at once.
    fn edit(&mut self, client: &mut LspClient, from: usize, to: usize, text: &str) {
        let change = self.change(from, to, text);
        self.send(client, vec![change]);
    }

    /// Sends a completion request at char index `at` without waiting.
    fn ask(&self, client: &mut LspClient, at: usize, trigger_kind: u32) -> i64 {
        let (line, character) = self.position(at);
        client.send_inline_completion_triggered(&self.uri, line, character, trigger_kind)
    }

    /// The text the server would put in the prompt before char index `at`: the
    /// prompt's `text` followed by its healed token's text.
    fn server_prefix(&self, client: &mut LspClient, at: usize) -> Result<String, String> {
        self.server_prompt(client, at).map(|(text, _)| text)
    }

    /// [`Doc::server_prefix`] and the prompt's length in tokens.
    fn server_prompt(&self, client: &mut LspClient, at: usize) -> Result<(String, usize), String> {
        let (line, character) = self.position(at);
        let prompt = client.prompt(&self.uri, line, character);
        if prompt.get("error").is_some() {
            return Err(format!("inkling/prompt failed: {prompt}"));
        }
        let text = prompt["text"].as_str().unwrap_or_default();
        let healed = prompt["healed"].as_str().unwrap_or_default();
        let tokens = prompt["tokens"].as_array().map_or(0, Vec::len);
        Ok((format!("{text}{healed}"), tokens))
    }
}

/// Where two strings first differ, for a readable report.
fn first_difference(server: &str, client: &str) -> String {
    let common = server
        .chars()
        .zip(client.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let around =
        |s: &str| -> String { s.chars().skip(common.saturating_sub(20)).take(50).collect() };
    format!(
        "lengths {} / {} chars; first difference at char {common}: server {:?}, client {:?}",
        server.chars().count(),
        client.chars().count(),
        around(server),
        around(client)
    )
}

// ---------------------------------------------------------------------------------
// Servers.

fn utf8_capabilities() -> Value {
    let mut capabilities = vscode_capabilities();
    capabilities["general"]["positionEncodings"] = json!(["utf-8", "utf-16"]);
    capabilities
}

/// The server's environment: `INKLING_SOAK_SERVER_ENV` (comma-separated `K=V`),
/// e.g. `MALLOC_MMAP_THRESHOLD_=131072` to see what glibc's allocator keeps.
fn server_launch() -> Launch {
    let env = std::env::var("INKLING_SOAK_SERVER_ENV").unwrap_or_default();
    Launch {
        env: env
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
        ..Launch::default()
    }
}

fn ready_server(capabilities: Value, options: Value) -> LspClient {
    let mut client = LspClient::launch(&server_launch());
    // `INKLING_SOAK_OPTIONS`: a JSON object merged into every server's options.
    let mut options = options;
    if let Ok(extra) = std::env::var("INKLING_SOAK_OPTIONS") {
        let extra: Value = serde_json::from_str(&extra).expect("INKLING_SOAK_OPTIONS is JSON");
        for (key, value) in extra
            .as_object()
            .expect("INKLING_SOAK_OPTIONS is an object")
        {
            if !options.is_object() {
                options = json!({});
            }
            options[key] = value.clone();
        }
    }
    let result = client.initialize(capabilities, options);
    assert!(
        result["capabilities"]["positionEncoding"].is_string(),
        "initialize failed: {result}"
    );
    client.wait_until_ready(LOAD_TIMEOUT);
    client
}

fn encoding_of(client_utf8: bool) -> &'static str {
    if client_utf8 { "UTF-8" } else { "UTF-16" }
}

// ---------------------------------------------------------------------------------
// Part 1: request / cancel cycles.

fn cancel_cycles(rng: &mut Rng, cycles: usize, failures: &mut Vec<String>) {
    println!("\n[cancel] {cycles} inlineCompletion + $/cancelRequest cycles, delay 0–50 ms");
    let mut client = ready_server(vscode_capabilities(), Value::Null);
    let pid = client.pid();
    let source = std::fs::read_to_string(python_stdlib_file("textwrap")).expect("read textwrap");
    let mut doc = Doc::new("file:///soak/cancel.py", "python", &source, false);
    doc.open(&mut client);
    let starts = doc.line_starts();
    // Warm up: one answered request, so the first cycles are not the prompt from scratch.
    let (line, character) = doc.position(doc.line_end(&starts, starts.len() / 2));
    client.inline_completion(&doc.uri, line, character);
    let rss_before = rss_kib(pid);
    let fds_before = fd_count(pid);

    let mut tracker = Tracker::default();
    let mut cancel_latency = Vec::new();
    let mut answered_before_cancel = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        // Line ends (and a few line middles) over the second half of the file.
        let line = starts.len() / 2 + rng.below(starts.len() / 2 - 1);
        let end = doc.line_end(&starts, line);
        let at = if cycle % 5 == 4 {
            starts[line] + (end - starts[line]) / 2
        } else {
            end
        };
        let trigger = if cycle % 2 == 0 { 1 } else { 2 };
        let id = doc.ask(&mut client, at, trigger);
        tracker.sent(id);
        let delay = Duration::from_millis(rng.below(51) as u64);
        std::thread::sleep(delay);
        tracker.poll(&mut client);
        if tracker.answers.contains_key(&id) {
            answered_before_cancel += 1;
        }
        client.notify("$/cancelRequest", json!({"id": id}));
        let cancelled_at = Instant::now();
        if tracker.wait(&mut client, id, ANSWER_TIMEOUT).is_some() {
            let answered_at = tracker.answers[&id][0].0;
            cancel_latency.push(answered_at.saturating_duration_since(cancelled_at));
        }
    }
    let elapsed = started.elapsed();
    tracker.settle(&mut client, ANSWER_TIMEOUT);
    // Still serving: a request nobody cancels gets its answer.
    let (line, character) = doc.position(doc.line_end(&starts, starts.len() / 2 + 7));
    let last = client.inline_completion(&doc.uri, line, character);
    let serves = last.get("result").is_some();
    let alive_after = alive(pid);
    let rss_after = rss_kib(pid);
    let fds_after = fd_count(pid);
    let stats = client.stats();
    cancel_latency.sort();

    println!("  {}", tracker.describe());
    println!(
        "  answered before the cancel was sent: {answered_before_cancel}; cancel → answer: p50 {} ms, p95 {} ms, max {} ms; {:.1} s in all",
        quantile(&cancel_latency, 0.5).as_millis(),
        quantile(&cancel_latency, 0.95).as_millis(),
        cancel_latency.last().map_or(0, |d| d.as_millis()),
        elapsed.as_secs_f64()
    );
    println!(
        "  server counters: requests {}, cancelled {}; alive after: {alive_after}, a further request answered: {serves}",
        stats["requests"], stats["cancelled"]
    );
    println!(
        "  RSS before {:.1} MiB, after {:.1} MiB ({:+.1} MiB); open fds {fds_before} → {fds_after}",
        mib(rss_before),
        mib(rss_after),
        mib(rss_after) - mib(rss_before)
    );
    tracker.check("cancel", failures);
    if !alive_after || !serves {
        failures.push(format!(
            "cancel: server not serving after the cycles: {last}"
        ));
    }
    if !client.shutdown_and_exit().success() {
        failures.push("cancel: the server did not exit cleanly".into());
    }
}

// ---------------------------------------------------------------------------------
// Part 2: unthrottled edits.

/// What random edits insert: code, accents, CJK, Hangul, emoji (a ZWJ family, a
/// flag), a combining accent, line breaks of every kind, and characters that are
/// line breaks for Unicode but not for LSP.
const PIECES: &[&str] = &[
    "a",
    "x",
    "_",
    " ",
    "    ",
    "\t",
    "(",
    ")",
    "{",
    "}",
    ":",
    "=",
    ",",
    "\"",
    "'",
    "def f(x):",
    "return x + 1",
    "let y = 2;",
    "é",
    "ñ",
    "ß",
    "Ω",
    "ﬁ",
    "日本語",
    "中文",
    "한국어",
    "😀",
    "🦀",
    "👨‍👩‍👧",
    "🇫🇷",
    "e\u{301}",
    "\u{301}",
    "\n",
    "\n",
    "\r\n",
    "\r\n",
    "\r",
    "\u{2028}",
    "\u{85}",
    "\u{feff}",
    "\u{200b}",
];

fn random_insert(rng: &mut Rng) -> String {
    (0..1 + rng.below(3)).map(|_| *rng.pick(PIECES)).collect()
}

/// A random range of `doc` (both ends at nameable positions), at most `max` chars.
fn random_range(rng: &mut Rng, doc: &Doc, max: usize) -> (usize, usize) {
    let len = doc.text.len();
    let from = doc.floor(rng.below(len + 1));
    let to = (from + rng.below(max + 1)).min(len);
    // Not inside a line break: the end moves past its `\n`.
    let to = if doc.inside_crlf(to) { to + 1 } else { to };
    (from, to)
}

/// One random change to `doc`, kept between `low` and `high` chars long.
fn random_change(rng: &mut Rng, doc: &mut Doc, low: usize, high: usize) -> Value {
    let len = doc.text.len();
    let roll = rng.below(100);
    let (from, to, text) = if len > high || (len > low && roll < 25) {
        let (from, to) = random_range(rng, doc, 12);
        (from, to, String::new())
    } else if len < low || roll < 80 {
        let at = doc.floor(rng.below(len + 1));
        (at, at, random_insert(rng))
    } else {
        let (from, to) = random_range(rng, doc, 10);
        (from, to, random_insert(rng))
    };
    doc.change(from, to, &text)
}

fn unthrottled_edits(rng: &mut Rng, edits: usize, utf8: bool, failures: &mut Vec<String>) {
    let encoding = encoding_of(utf8);
    println!(
        "\n[edits, {encoding}] {edits} didChange edits sent without waiting, an inlineCompletion every ~100"
    );
    let capabilities = if utf8 {
        utf8_capabilities()
    } else {
        vscode_capabilities()
    };
    let mut client = ready_server(capabilities, Value::Null);
    let pid = client.pid();
    let initial = "def greet(name):\n    return \"héllo \" + name  # 日本語 😀\r\n\r\nclass Ünïcode:\r\n    pass\n";
    let mut doc = Doc::new("file:///soak/edits.py", "python", initial, utf8);
    doc.open(&mut client);
    let end = doc.text.len();
    client.inline_completion(&doc.uri, doc.position(end).0, doc.position(end).1);
    let rss_before = rss_kib(pid);

    let mut tracker = Tracker::default();
    let mut notifications = 0;
    let mut changes = 0;
    let started = Instant::now();
    while changes < edits {
        // Most notifications carry one change; some carry two or three, applied in
        // order as a multi-cursor edit does.
        let n = if rng.chance(0.1) { 2 + rng.below(2) } else { 1 };
        let n = n.min(edits - changes);
        let batch: Vec<Value> = (0..n)
            .map(|_| random_change(rng, &mut doc, 300, 700))
            .collect();
        doc.send(&mut client, batch);
        notifications += 1;
        let before = changes;
        changes += n;
        if changes / 100 != before / 100 {
            let at = if rng.chance(0.5) {
                doc.text.len()
            } else {
                doc.floor(rng.below(doc.text.len() + 1))
            };
            let id = doc.ask(&mut client, at, 1 + rng.below(2) as u32);
            tracker.sent(id);
        }
        tracker.poll(&mut client);
    }
    let sent_in = started.elapsed();
    tracker.settle(&mut client, ANSWER_TIMEOUT);
    let settled_in = started.elapsed();

    let end = doc.text.len();
    let client_text = doc.string();
    let server = doc.server_prompt(&mut client, end);
    let tokens = server.as_ref().map_or(0, |(_, tokens)| *tokens);
    let server = server.map(|(text, _)| text);
    let (equal, detail) = match &server {
        Ok(server) if server == &client_text => (true, String::new()),
        // The prompt's layout may put something (`<bos>`) before the document.
        Ok(server) if server.ends_with(&client_text) => (
            true,
            format!(" (after {:?})", &server[..server.len() - client_text.len()]),
        ),
        Ok(server) => (false, first_difference(server, &client_text)),
        Err(e) => (false, e.clone()),
    };
    let rss_after = rss_kib(pid);
    let alive_after = alive(pid);

    println!(
        "  {changes} changes in {notifications} notifications sent in {:.2} s; all answered {:.2} s after the first edit",
        sent_in.as_secs_f64(),
        settled_in.as_secs_f64()
    );
    println!("  {}", tracker.describe());
    println!(
        "  final document: {} chars, {} lines, {tokens} prompt tokens; server text equals the client's: {equal}{detail}",
        doc.text.len(),
        doc.line_starts().len()
    );
    println!(
        "  RSS before {:.1} MiB, after {:.1} MiB ({:+.1} MiB); alive after: {alive_after}",
        mib(rss_before),
        mib(rss_after),
        mib(rss_after) - mib(rss_before)
    );
    let part = format!("edits ({encoding})");
    tracker.check(&part, failures);
    if !equal {
        failures.push(format!("{part}: document text differs: {detail}"));
    }
    if !alive_after {
        failures.push(format!("{part}: server gone"));
    }
    if !client.shutdown_and_exit().success() {
        failures.push(format!("{part}: the server did not exit cleanly"));
    }
}

// ---------------------------------------------------------------------------------
// Part 3: the soak.

/// One row of the memory table.
struct Sample {
    edits: usize,
    completions: usize,
    elapsed: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: usize,
}

fn sample(pid: u32, edits: usize, completions: usize, started: Instant) -> Sample {
    Sample {
        edits,
        completions,
        elapsed: started.elapsed(),
        rss_kib: rss_kib(pid),
        hwm_kib: proc_status(pid, "VmHWM"),
        threads: proc_status(pid, "Threads"),
        fds: fd_count(pid),
    }
}

/// The soak's documents: real modules of the Python standard library, more of them
/// than `warmStates` keeps warm.
const SOAK_MODULES: &[&str] = &[
    "textwrap", "shlex", "fnmatch", "glob", "heapq", "bisect", "queue",
];

struct Session<'a> {
    client: LspClient,
    tracker: Tracker,
    rng: &'a mut Rng,
    docs: Vec<Doc>,
    open: Vec<bool>,
    edits: usize,
    completions: usize,
    accepted: usize,
    latencies: Vec<Duration>,
    /// The documents' original sizes, to keep them near.
    sizes: Vec<usize>,
    /// The line last edited in each document.
    lines: Vec<usize>,
}

impl Session<'_> {
    /// An automatic request at char `at` of document `d`, waited for; the suggestion.
    fn complete(&mut self, d: usize, at: usize, trigger: u32) -> Option<String> {
        let id = self.docs[d].ask(&mut self.client, at, trigger);
        self.tracker.sent(id);
        let asked = Instant::now();
        let response = self.tracker.wait(&mut self.client, id, ANSWER_TIMEOUT)?;
        self.latencies.push(asked.elapsed());
        self.completions += 1;
        inline_items(&response)
            .first()
            .and_then(|item| item["insertText"].as_str().map(str::to_owned))
    }

    /// Types `text` at char `at` of document `d`, one char per edit, asking for a
    /// completion after some keystrokes; sometimes accepts a suggestion. Returns
    /// where the cursor ends.
    fn type_text(&mut self, d: usize, mut at: usize, text: &str, ask_every: f64) -> usize {
        for c in text.chars() {
            let doc = &mut self.docs[d];
            doc.edit(&mut self.client, at, at, &c.to_string());
            at += 1;
            self.edits += 1;
            if self.rng.chance(ask_every) {
                let trigger = if self.rng.chance(0.05) { 1 } else { 2 };
                if let Some(suggestion) = self.complete(d, at, trigger)
                    && self.rng.chance(0.3)
                {
                    // Accept it, as Tab does, and ask again where it ends.
                    self.docs[d].edit(&mut self.client, at, at, &suggestion);
                    at += suggestion.chars().count();
                    self.edits += 1;
                    self.accepted += 1;
                    self.complete(d, at, 2);
                }
            }
            self.tracker.poll(&mut self.client);
        }
        at
    }

    /// One burst of activity in document `d`.
    fn burst(&mut self, d: usize) {
        let starts = self.docs[d].line_starts();
        // Near the last place edited in this document, as people work; now and then
        // somewhere else.
        let line = if self.rng.chance(0.1) {
            self.rng.below(starts.len())
        } else {
            (self.lines[d] + self.rng.below(11))
                .saturating_sub(5)
                .min(starts.len() - 1)
        };
        self.lines[d] = line;
        let end = self.docs[d].line_end(&starts, line);
        let roll = self.rng.below(100);
        let too_big = self.docs[d].text.len() > self.sizes[d] * 5 / 4;
        if too_big || roll < 10 {
            // Delete a block of lines (cut, or undoing a paste).
            let last = (line + 1 + self.rng.below(12)).min(starts.len() - 1);
            let to = self.docs[d].floor(starts[last]);
            self.docs[d].edit(&mut self.client, starts[line], to.max(starts[line]), "");
            self.edits += 1;
        } else if roll < 20 {
            // Paste a block from elsewhere in the file; undo it half the time.
            let from_line = self.rng.below(starts.len());
            let to_line = (from_line + 1 + self.rng.below(20)).min(starts.len() - 1);
            let block: String = self.docs[d].text[starts[from_line]..starts[to_line]]
                .iter()
                .collect();
            let at = starts[line];
            self.docs[d].edit(&mut self.client, at, at, &block);
            self.edits += 1;
            if self.rng.chance(0.5) {
                let n = block.chars().count();
                self.docs[d].edit(&mut self.client, at, at + n, "");
                self.edits += 1;
            }
        } else if roll < 35 {
            // Backspace a few times at the end of a line, then retype something.
            let n = self.rng.below(8).min(end - starts[line]);
            let mut at = end;
            for _ in 0..n {
                self.docs[d].edit(&mut self.client, at - 1, at, "");
                at -= 1;
                self.edits += 1;
            }
            let retyped = self.random_line(d);
            let take: String = retyped.chars().take(n + 3).collect();
            self.type_text(d, at, &take, 0.1);
        } else {
            // Type a new line below this one: a line of the file itself, now and
            // then with non-ASCII text in it.
            let mut typed = format!("\n{}", self.random_line(d).trim_end());
            if self.rng.chance(0.1) {
                typed.push_str(" # ");
                let note: &&str = self
                    .rng
                    .pick(&["日本語", "héllo", "😀 ok", "한국어", "Ω≈ç"]);
                typed.push_str(note);
            }
            // A quarter of the time fast, without asking for completions.
            let ask_every = if self.rng.chance(0.25) { 0.0 } else { 0.1 };
            self.type_text(d, end, &typed, ask_every);
            self.lines[d] = line + 1;
        }
    }

    fn random_line(&mut self, d: usize) -> String {
        let starts = self.docs[d].line_starts();
        let line = self.rng.below(starts.len());
        let end = self.docs[d].line_end(&starts, line);
        self.docs[d].text[starts[line]..end].iter().collect()
    }
}

/// Checks every line of `doc` against the server's copy: with the cursor at the end
/// of each line, the prompt must end with that line and the one before it
/// (the window starts at a multiple of 32 lines, so line 32k may start it).
fn check_lines(client: &mut LspClient, doc: &Doc) -> Result<usize, String> {
    let starts = doc.line_starts();
    for line in 0..starts.len() {
        let end = doc.line_end(&starts, line);
        let from = if line % 32 == 0 {
            starts[line]
        } else {
            starts[line - 1]
        };
        let expected: String = doc.text[from..end].iter().collect();
        let server = doc.server_prefix(client, end)?;
        if !server.ends_with(&expected) {
            let n = expected.chars().count();
            let skip = server.chars().count().saturating_sub(n);
            let tail: String = server.chars().skip(skip).collect();
            return Err(format!(
                "{} line {line}: {}",
                doc.uri,
                first_difference(&tail, &expected)
            ));
        }
    }
    Ok(starts.len())
}

fn soak(rng: &mut Rng, scale: f64, failures: &mut Vec<String>) {
    let target_edits = (2_500.0 * scale) as usize;
    println!(
        "\n[soak] {target_edits} edits and ~{} completions over {} documents (scale {scale})",
        target_edits / 13,
        SOAK_MODULES.len()
    );
    let mut client = ready_server(vscode_capabilities(), Value::Null);
    let pid = client.pid();
    let mut docs = Vec::new();
    for module in SOAK_MODULES {
        let source = std::fs::read_to_string(python_stdlib_file(module)).expect("read module");
        let mut doc = Doc::new(
            &format!("file:///soak/{module}.py"),
            "python",
            &source,
            false,
        );
        doc.open(&mut client);
        docs.push(doc);
    }
    let sizes = docs.iter().map(|d| d.text.len()).collect();
    let mut session = Session {
        client,
        tracker: Tracker::default(),
        rng,
        open: vec![true; docs.len()],
        docs,
        edits: 0,
        completions: 0,
        accepted: 0,
        latencies: Vec::new(),
        sizes,
        lines: vec![0; SOAK_MODULES.len()],
    };
    let started = Instant::now();
    let mut samples = vec![sample(pid, 0, 0, started)];
    let every = (target_edits / 20).max(1);
    let mut next_sample = every;
    let mut current = 0;
    let mut reopened = 0;
    while session.edits < target_edits {
        if session.rng.chance(0.03) {
            current = session.rng.below(session.docs.len());
        }
        if session.rng.chance(0.02) {
            // Close a document, work elsewhere, reopen it with the client's text.
            let d = session.rng.below(session.docs.len());
            session.docs[d].close(&mut session.client);
            session.open[d] = false;
            if session.rng.chance(0.5) {
                session.docs[d].open(&mut session.client);
                session.open[d] = true;
                reopened += 1;
            }
        }
        if !session.open[current] {
            session.docs[current].open(&mut session.client);
            session.open[current] = true;
            reopened += 1;
        }
        session.burst(current);
        if session.edits >= next_sample {
            let row = sample(pid, session.edits, session.completions, started);
            eprintln!(
                "soak: {} edits, {} completions, {:.0} s, RSS {:.1} MiB",
                row.edits,
                row.completions,
                row.elapsed.as_secs_f64(),
                mib(row.rss_kib)
            );
            samples.push(row);
            next_sample += every;
        }
    }
    session.tracker.settle(&mut session.client, ANSWER_TIMEOUT);
    samples.push(sample(pid, session.edits, session.completions, started));

    // Every line of every document, against the server's copy.
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (d, doc) in session.docs.iter().enumerate() {
        if !session.open[d] {
            continue;
        }
        match check_lines(&mut session.client, doc) {
            Ok(lines) => checked += lines,
            Err(e) => mismatches.push(e),
        }
    }
    let stats = session.client.stats();
    let alive_after = alive(pid);

    println!(
        "  {} edits, {} completions ({} accepted), {} documents reopened, in {:.0} s",
        session.edits,
        session.completions,
        session.accepted,
        reopened,
        started.elapsed().as_secs_f64()
    );
    println!("  {}", session.tracker.describe());
    session.latencies.sort();
    if !session.latencies.is_empty() {
        println!(
            "  completion latency (while another engineer's work may share the CPU): p50 {} ms, p95 {} ms; answered from memory {}, warm restores {}",
            quantile(&session.latencies, 0.5).as_millis(),
            quantile(&session.latencies, 0.95).as_millis(),
            stats["typedThrough"],
            stats["warmRestores"]
        );
    }
    println!(
        "  documents checked line by line against the client's copy: {checked} lines, {} mismatches",
        mismatches.len()
    );
    println!("  resident memory over the soak:");
    println!("  | edits | completions | elapsed s | VmRSS MiB | VmHWM MiB | threads | fds |");
    println!("  |---:|---:|---:|---:|---:|---:|---:|");
    for row in &samples {
        println!(
            "  | {} | {} | {:.0} | {:.1} | {:.1} | {} | {} |",
            row.edits,
            row.completions,
            row.elapsed.as_secs_f64(),
            mib(row.rss_kib),
            mib(row.hwm_kib),
            row.threads,
            row.fds
        );
    }
    // Growth after the first tenth (caches filling up) to the end.
    let early = &samples[(samples.len() / 10).max(1).min(samples.len() - 1)];
    let last = samples.last().expect("samples");
    println!(
        "  RSS from {:.1} MiB (start) / {:.1} MiB (after {} edits) to {:.1} MiB (end): {:+.1} MiB over the last {} edits",
        mib(samples[0].rss_kib),
        mib(early.rss_kib),
        early.edits,
        mib(last.rss_kib),
        mib(last.rss_kib) - mib(early.rss_kib),
        last.edits - early.edits
    );
    if let Some(trimmed) = trimmed_rss_kib(pid) {
        println!(
            "  after malloc_trim(0) at the end: {:.1} MiB ({:+.1} MiB over the start)",
            mib(trimmed),
            mib(trimmed) - mib(samples[0].rss_kib)
        );
    }
    session.tracker.check("soak", failures);
    for mismatch in &mismatches {
        failures.push(format!("soak: text differs: {mismatch}"));
    }
    if !alive_after {
        failures.push("soak: server gone".into());
    }
    if !session.client.shutdown_and_exit().success() {
        failures.push("soak: the server did not exit cleanly".into());
    }
}

// ---------------------------------------------------------------------------------
// Part 4: a 20 MB document.

fn large_document(rounds: usize, failures: &mut Vec<String>) {
    const SIZE: usize = 20 << 20;
    println!("\n[large] opening and closing a 20 MB document, {rounds} times");
    let mut client = ready_server(vscode_capabilities(), Value::Null);
    let pid = client.pid();
    let source = std::fs::read_to_string(python_stdlib_file("textwrap")).expect("read textwrap");
    let mut text = String::with_capacity(SIZE + source.len());
    let mut copy = 0;
    while text.len() < SIZE {
        // Each copy's names differ, so the file is not one text repeated.
        text.push_str(&source.replace("def ", &format!("def c{copy}_")));
        copy += 1;
    }
    let small = Doc::new(
        "file:///soak/small.py",
        "python",
        "def square(x):\n    return x * x\n\n\ndef cube(x):\n    return ",
        false,
    );
    let mut small = small;
    small.open(&mut client);
    let small_end = small.text.len();
    let mut tracker = Tracker::default();
    let ask_small = |client: &mut LspClient, tracker: &mut Tracker| {
        let id = small.ask(client, small_end, 1);
        tracker.sent(id);
        tracker.wait(client, id, ANSWER_TIMEOUT)
    };
    ask_small(&mut client, &mut tracker);
    let rss_before = rss_kib(pid);
    println!(
        "  RSS before: {:.1} MiB (a small document open, one completion answered)",
        mib(rss_before)
    );
    let trim = std::env::var_os("INKLING_SOAK_MALLOC_TRIM").is_some();
    println!(
        "  | round | open (s) | RSS after open | after requests on it | after close + 3 requests | VmHWM |{}",
        if trim { " after malloc_trim(0) |" } else { "" }
    );
    println!(
        "  |---:|---:|---:|---:|---:|---:|{}",
        if trim { "---:|" } else { "" }
    );
    let mut last_close = 0;
    let mut last_trimmed = None;
    for round in 1..=rounds {
        let mut large = Doc {
            uri: "file:///soak/large.py".into(),
            language: "python",
            text: Vec::new(),
            version: 1,
            utf8: false,
        };
        let opened = Instant::now();
        client.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": large.uri, "languageId": "python", "version": 1, "text": text}}),
        );
        client.stats(); // Answered after the open is handled.
        let open_time = opened.elapsed();
        let rss_open = rss_kib(pid);
        large.text = text.chars().collect();
        let starts = large.line_starts();
        // A completion at the end, one in the middle, an edit, one at the top.
        for line in [starts.len() - 2, starts.len() / 2, 40] {
            let at = large.line_end(&starts, line);
            let id = large.ask(&mut client, at, 1);
            tracker.sent(id);
            tracker.wait(&mut client, id, ANSWER_TIMEOUT);
        }
        let mid = starts[starts.len() / 2];
        large.edit(&mut client, mid, mid, "x = 1\n");
        let rss_requests = rss_kib(pid);
        large.close(&mut client);
        for _ in 0..3 {
            ask_small(&mut client, &mut tracker);
        }
        std::thread::sleep(Duration::from_millis(500));
        let rss_close = rss_kib(pid);
        last_close = rss_close;
        let hwm = proc_status(pid, "VmHWM");
        let trimmed = trimmed_rss_kib(pid).map_or(String::new(), |kib| {
            last_trimmed = Some(kib);
            format!(" {:.1} MiB |", mib(kib))
        });
        println!(
            "  | {round} | {:.2} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |{trimmed}",
            open_time.as_secs_f64(),
            mib(rss_open),
            mib(rss_requests),
            mib(rss_close),
            mib(hwm)
        );
    }
    tracker.settle(&mut client, ANSWER_TIMEOUT);
    println!("  {}", tracker.describe());
    println!(
        "  after {rounds} rounds: {:+.1} MiB over the RSS before the first open",
        mib(last_close) - mib(rss_before)
    );
    if let Some(trimmed) = last_trimmed {
        println!(
            "  after the last round and malloc_trim(0): {:+.1} MiB over the RSS before the first open",
            mib(trimmed) - mib(rss_before)
        );
    }
    tracker.check("large", failures);
    if !alive(pid) {
        failures.push("large: server gone".into());
    }
    if !client.shutdown_and_exit().success() {
        failures.push("large: the server did not exit cleanly".into());
    }
}

fn main() {
    let scale: f64 = std::env::var("INKLING_SOAK_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let seed: u64 = std::env::var("INKLING_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234);
    let parts =
        std::env::var("INKLING_SOAK_PARTS").unwrap_or_else(|_| "cancel,edits,soak,large".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    println!("soak benchmark: scale {scale}, seed {seed}, parts {parts}");
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    if part("cancel") {
        cancel_cycles(&mut rng, 1000, &mut failures);
    }
    if part("edits") {
        unthrottled_edits(&mut rng, 10_000, false, &mut failures);
        unthrottled_edits(&mut rng, 10_000, true, &mut failures);
    }
    if part("soak") {
        soak(&mut rng, scale, &mut failures);
    }
    if part("large") {
        let rounds = std::env::var("INKLING_SOAK_LARGE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        large_document(rounds, &mut failures);
    }
    if failures.is_empty() {
        println!("\nall checks passed");
    } else {
        println!("\n{} checks FAILED:", failures.len());
        for failure in &failures {
            println!("  - {failure}");
        }
        std::process::exit(1);
    }
}
