//! Shared helpers of inkling's benchmarks.

pub mod llama_server;
pub mod llama_vim;
pub mod proxy;

use std::process::Command;
use std::time::{Duration, Instant};

use inkling_harness::LspClient;
use serde_json::Value;

/// The number in environment variable `name`, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A counter of an `inkling/stats` answer (0 when absent).
pub fn counter(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

/// A counter's growth between two `inkling/stats` answers.
pub fn delta(after: &Value, before: &Value, name: &str) -> u64 {
    counter(after, name) - counter(before, name)
}

/// Asks for an automatic inline completion at `line`:`column` of `uri`, as an editor
/// does while the user types, and waits for it: the time to the answer, and the answer.
pub fn ask_automatic(
    client: &mut LspClient,
    uri: &str,
    line: u32,
    column: u32,
) -> (Duration, Value) {
    let asked = Instant::now();
    let id = client.send_inline_completion_triggered(uri, line, column, 2);
    let response = client.response(id, Duration::from_secs(120));
    (asked.elapsed(), response)
}

/// The path of a module of the Python standard library on this machine: real code that
/// nobody here wrote, present wherever `python3` is.
pub fn python_stdlib_file(module: &str) -> String {
    let output = Command::new("python3")
        .args(["-c", &format!("import {module}; print({module}.__file__)")])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "python3 cannot import {module}");
    String::from_utf8(output.stdout)
        .expect("utf-8 path")
        .trim()
        .to_owned()
}

/// `options` (an object, as `initializationOptions`) with the options of
/// `INKLING_BENCH_OPTIONS` (a JSON object) set over them: to measure a setting
/// without editing a benchmark.
pub fn with_bench_options(mut options: serde_json::Value) -> serde_json::Value {
    let Ok(extra) = std::env::var("INKLING_BENCH_OPTIONS") else {
        return options;
    };
    let extra: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&extra).expect("INKLING_BENCH_OPTIONS is a JSON object");
    options
        .as_object_mut()
        .expect("options are an object")
        .extend(extra);
    options
}

/// The `q` quantile (0..=1) of `values`, which must be sorted and non-empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Mean, median, 95th percentile and maximum of some latencies.
#[derive(Clone, Copy, Debug)]
pub struct Latencies {
    /// The mean.
    pub mean: Duration,
    /// The median.
    pub p50: Duration,
    /// The 95th percentile.
    pub p95: Duration,
    /// The largest.
    pub max: Duration,
}

impl Latencies {
    /// Of `values`, in any order; there must be some.
    pub fn of(values: impl IntoIterator<Item = Duration>) -> Latencies {
        let mut sorted: Vec<Duration> = values.into_iter().collect();
        sorted.sort();
        Latencies {
            mean: sorted.iter().sum::<Duration>() / sorted.len() as u32,
            p50: quantile(&sorted, 0.5),
            p95: quantile(&sorted, 0.95),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// What is typed: a file's text before and after the typed lines, and those lines.
pub struct Replay {
    /// The module and the first typed line, for reports.
    pub name: String,
    /// The text before the typed lines.
    pub before: String,
    /// The typed lines, without their last newline.
    pub typed: Vec<char>,
    /// The text after the typed lines.
    pub after: String,
    /// The 0-based line the typing starts on.
    pub first_line: usize,
}

impl Replay {
    /// The file as opened, before the first keystroke.
    pub fn opened_text(&self) -> String {
        format!("{}\n{}", self.before, self.after)
    }

    /// The names of `replays`, for a report's first line.
    pub fn names(replays: &[Replay]) -> String {
        replays
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whole lines from the middle of `module`'s file, as when writing new code into an
    /// existing file: the lines after them exist, the rest of the typed line does not.
    pub fn of(module: &str, keystrokes: usize) -> Replay {
        let file = python_stdlib_file(module);
        let source = std::fs::read_to_string(&file).expect("read the file to type");
        let lines: Vec<&str> = source.split_inclusive('\n').collect();
        let first_line = lines.len() / 3;
        let mut last_line = first_line;
        let mut typed_chars = 0;
        while last_line < lines.len() && typed_chars < keystrokes {
            typed_chars += lines[last_line].chars().count();
            last_line += 1;
        }
        Replay {
            name: format!("{module}.py from line {first_line}"),
            before: lines[..first_line].concat(),
            typed: lines[first_line..last_line]
                .concat()
                .trim_end_matches('\n')
                .chars()
                .collect(),
            after: lines[last_line..].concat(),
            first_line,
        }
    }

    /// Types the lines into document `uri` (open at version 1, the cursor at the
    /// start of the first typed line) one keystroke at a time, calling `after` with
    /// the client and the cursor's line and column after each.
    pub fn type_into(
        &self,
        client: &mut LspClient,
        uri: &str,
        mut after: impl FnMut(&mut LspClient, u32, u32),
    ) {
        let (mut line, mut column) = (self.first_line as u32, 0u32);
        for (version, &ch) in (2..).zip(&self.typed) {
            client.edit(
                uri,
                version,
                (line, column),
                (line, column),
                &ch.to_string(),
            );
            if ch == '\n' {
                line += 1;
                column = 0;
            } else {
                column += ch.len_utf16() as u32;
            }
            after(client, line, column);
        }
    }
}
