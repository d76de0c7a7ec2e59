//! Completion quality on real code that nobody here wrote: Python standard-library
//! modules, Rust crates and llama.cpp's C/C++ sources from the cargo registry.
//!
//! At evenly spread lines of each file, the cursor is put partway through the line's
//! code and the rest of that line is removed, as if the user were typing it; the
//! lines after it stay. Every other position keeps, right of the cursor, the closing
//! brackets and quotes an editor's auto-pairing would have inserted. The default model then completes, through the same stages
//! as the server (context → prompt → engine → post-processing), twice: with
//! post-processing off (only end-of-generation, the limits, and the end of the line
//! when code is right of the cursor) and on. Reported per language and overall:
//!
//! - **line exact**: the suggestion's first line equals what is left to type on the line;
//! - **chars saved**: for a user who accepts a suggestion only when it is exactly
//!   right, the characters accepted, as a share of the characters left to type on
//!   the lines. Exactly right means the line really continues with all of it: as the
//!   lines below are in the document already, a suggestion of several lines would
//!   duplicate them and never counts.
//!
//! - **tokens shown**: the share of generated tokens the suggestions were made of
//!   (the rest was generated past where post-processing cut).
//!
//! `cargo bench -p inkling-benches --bench quality`; `INKLING_QUALITY_POSITIONS`
//! sets positions per file (default 12); `INKLING_QUALITY_VERBOSE=1` prints every
//! suggestion next to what was expected, on stderr; `INKLING_BENCH_OPTIONS` (a JSON
//! object of inkling options, e.g. `{"prefixTokens": 384}`) changes settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use inkling::config::{Overrides, Settings};
use inkling_benches::{python_stdlib_file, with_bench_options};
use inkling_core::context::{self, Window};
use inkling_core::documents::Document;
use inkling_core::generate::{Backend, CancelFlag, CompletionRequest};
use inkling_core::postprocess::{self, Options, StopRules, Trigger};
use inkling_engine::{Engine, EngineState};

/// `name-version` directories under the cargo registry whose name starts with `prefix`.
fn registry_file(prefix: &str, relative: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let src = home.join("registry/src");
    std::fs::read_dir(src)
        .ok()?
        .filter_map(Result::ok)
        .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .filter(|dir| dir.file_name().to_string_lossy().starts_with(prefix))
        .map(|dir| dir.path().join(relative))
        .find(|path| path.exists())
}

struct Position {
    document: Document,
    cursor: usize,
    /// What the user still has to type on the cursor line.
    expected: String,
}

/// The closers an editor's auto-pairing leaves right of the cursor after `typed`:
/// one for each bracket and quote still open, innermost first.
fn auto_closers(typed: &str) -> String {
    let mut open = Vec::new();
    let mut quote: Option<char> = None;
    for c in typed.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => open.push(')'),
            (None, '[') => open.push(']'),
            (None, '{') => open.push('}'),
            (None, ')' | ']' | '}') if open.last() == Some(&c) => {
                open.pop();
            }
            _ => {}
        }
    }
    quote.into_iter().chain(open.into_iter().rev()).collect()
}

/// Whether `text` closes no bracket it did not open.
fn balanced(text: &str) -> bool {
    auto_closers(text).is_empty() && {
        let mut depth = 0i32;
        text.chars().all(|c| {
            depth += match c {
                '(' | '[' | '{' => 1,
                ')' | ']' | '}' => -1,
                _ => 0,
            };
            depth >= 0
        })
    }
}

/// Where to put the cursor in `line` (a byte offset) so that it sits inside a call's
/// or literal's brackets: halfway between the first opener at or after 30% of the
/// code and the end of the line.
fn cut_inside_brackets(line: &str, indent: usize) -> Option<usize> {
    let from = indent + (line.len() - indent) * 3 / 10;
    let opener = line[from..].find(['(', '[', '{'])? + from + 1;
    let mut cut = opener + (line.len() - opener) / 2;
    while !line.is_char_boundary(cut) {
        cut += 1;
    }
    Some(cut)
}

/// Positions spread over `text`: lines with at least 12 chars of code that are not
/// comments. Even positions put the cursor 40% into the code with nothing right of
/// it. Odd ones model an editor with auto-pairing: the cursor sits inside brackets
/// (or a string), whose closers stand right of it; what is left to type is the text
/// up to where the real line has those closers.
fn positions(text: &str, language_id: &str, count: usize) -> Vec<Position> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let candidates: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let code = lines[i].trim();
            code.len() >= 12 && !code.starts_with(['#', '/', '*'])
        })
        .collect();
    let step = (candidates.len() / count.max(1)).max(1);
    candidates
        .iter()
        .step_by(step)
        .take(count)
        .enumerate()
        .map(|(n, &i)| {
            let line = lines[i].trim_end_matches(['\n', '\r']);
            let indent = line.len() - line.trim_start().len();
            let paired = (n % 2 == 1)
                .then(|| cut_inside_brackets(line, indent))
                .flatten()
                .and_then(|cut| {
                    let closers = auto_closers(&line[..cut]);
                    let rest = &line[cut..];
                    (0..=rest.len())
                        .filter(|&k| rest.is_char_boundary(k))
                        .find(|&k| rest[k..].starts_with(&closers) && balanced(&rest[..k]))
                        .filter(|_| !closers.is_empty())
                        .map(|k| (cut, closers, rest[..k].to_owned()))
                });
            let (cut, right, expected) = paired.unwrap_or_else(|| {
                let mut cut = indent + (line.len() - indent) * 2 / 5;
                while !line.is_char_boundary(cut) {
                    cut += 1;
                }
                (cut, String::new(), line[cut..].to_owned())
            });
            let before: String = lines[..i].concat() + &line[..cut];
            let after: String = right.clone() + "\n" + &lines[i + 1..].concat();
            Position {
                cursor: before.chars().count(),
                document: Document::new(&(before + &after), 1, language_id),
                expected,
            }
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Score {
    positions: usize,
    shown: usize,
    line_exact: usize,
    chars_saved: usize,
    chars_removed: usize,
    tokens_generated: usize,
    tokens_shown: usize,
}

impl Score {
    fn add(&mut self, other: Score) {
        self.positions += other.positions;
        self.shown += other.shown;
        self.line_exact += other.line_exact;
        self.chars_saved += other.chars_saved;
        self.chars_removed += other.chars_removed;
        self.tokens_generated += other.tokens_generated;
        self.tokens_shown += other.tokens_shown;
    }

    fn report(&self, label: &str) {
        let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
        println!(
            "  {label:<24} line exact {:>5.1}% ({}/{})  chars saved {:>5.1}% ({}/{})  shown {:>3}  tokens shown {:>5.1}% ({}/{})",
            pct(self.line_exact, self.positions),
            self.line_exact,
            self.positions,
            pct(self.chars_saved, self.chars_removed),
            self.chars_saved,
            self.chars_removed,
            self.shown,
            pct(self.tokens_shown, self.tokens_generated),
            self.tokens_shown,
            self.tokens_generated,
        );
    }
}

fn complete(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    position: &Position,
    options: Options,
) -> Score {
    let ctx = context::extract(&position.document, position.cursor, Window::default());
    let mut score = Score {
        positions: 1,
        chars_removed: position.expected.chars().count(),
        ..Score::default()
    };
    let Ok(plan) = postprocess::plan(&ctx, Trigger::Automatic, options) else {
        return score;
    };
    let stop = StopRules::new(&ctx, &plan, options);
    let settings = Settings::resolve(Overrides::default()).0;
    let request = CompletionRequest {
        context: ctx.clone(),
        stop: stop.clone(),
        max_tokens: settings.max_tokens,
        // Quality, not latency: each position's prompt is decoded in full.
        prompt_time_limit: None,
        generation_time_limit: settings.time_limits.for_trigger(Trigger::Automatic).1,
        cancel: CancelFlag::default(),
        document: "quality".into(),
        partial: None,
        background: false,
        keeps_cache: false,
        trigger: Trigger::Automatic,
        candidates: 1,
        suffix_rescoring: false,
        unbound_seeds: false,
        stop_when_unsure: false,
    };
    let Ok(generation) = runtime.block_on(engine.generate(request)) else {
        return score;
    };
    score.tokens_generated = generation.generated_tokens;
    score.tokens_shown =
        generation.tokens_for(postprocess::shown_len(&generation.text, &ctx, &stop));
    let Some(text) = postprocess::finish(&generation.text, &ctx, &stop) else {
        return score;
    };
    score.shown = 1;
    let first_line = text.lines().next().unwrap_or_default();
    if std::env::var_os("INKLING_QUALITY_VERBOSE").is_some() {
        eprintln!(
            "pp {}: expected {:?} got {:?}",
            if options.enabled { "on " } else { "off" },
            position.expected,
            text
        );
    }
    if first_line.trim_end() == position.expected.trim_end() {
        score.line_exact = 1;
    }
    // The lines after the cursor line are in the document already: only text that
    // the cursor line is missing can be right; more lines would duplicate code.
    if position.expected.starts_with(&text) {
        score.chars_saved = text.chars().count();
    }
    score
}

fn main() {
    let per_file: usize = std::env::var("INKLING_QUALITY_POSITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut files: Vec<(&str, PathBuf)> = ["statistics", "shlex", "heapq"]
        .iter()
        .map(|m| ("python", PathBuf::from(python_stdlib_file(m))))
        .collect();
    for (language, prefix, relative) in [
        ("rust", "ropey-1.", "src/rope.rs"),
        ("rust", "serde_json-1.", "src/de.rs"),
        ("cpp", "llama-cpp-sys-2-", "llama.cpp/src/llama-vocab.cpp"),
        ("c", "llama-cpp-sys-2-", "llama.cpp/ggml/src/ggml.c"),
    ] {
        match registry_file(prefix, relative) {
            Some(path) => files.push((language, path)),
            None => eprintln!("skipped: no {prefix}*/{relative} in the cargo registry"),
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let overrides: Overrides =
        serde_json::from_value(with_bench_options(serde_json::json!({}))).expect("options");
    let engine = Engine::start(Settings::resolve(overrides).0.engine);
    while !engine.is_ready() {
        if let EngineState::Failed(e) = &*engine.subscribe().borrow() {
            panic!("model failed to load: {e}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let off = Options {
        enabled: false,
        ..Options::default()
    };
    let on = Options::default();
    let mut totals = [Score::default(); 2];
    let mut by_language: Vec<(&str, [Score; 2])> = Vec::new();
    for (language, path) in &files {
        let text = std::fs::read_to_string(path).expect("read source file");
        let mut scores = [Score::default(); 2];
        for position in positions(&text, language, per_file) {
            scores[0].add(complete(&runtime, &engine, &position, off));
            scores[1].add(complete(&runtime, &engine, &position, on));
        }
        println!("{}", path.display());
        scores[0].report("post-processing off");
        scores[1].report("post-processing on");
        match by_language.iter_mut().find(|(l, _)| l == language) {
            Some((_, s)) => {
                s[0].add(scores[0]);
                s[1].add(scores[1]);
            }
            None => by_language.push((language, scores)),
        }
        totals[0].add(scores[0]);
        totals[1].add(scores[1]);
    }
    println!("\nby language");
    for (language, scores) in &by_language {
        scores[0].report(&format!("{language}: pp off"));
        scores[1].report(&format!("{language}: pp on"));
    }
    println!("\nall {} files", files.len());
    totals[0].report("post-processing off");
    totals[1].report("post-processing on");
}
