//! Typing replay: start the server, then type a real source file one keystroke at a
//! time, asking for an inline completion after each, the way an editor with ghost
//! text does. Reports start-up time to the first completion, p50/p95 latency per
//! request, and prompt tokens evaluated / reused and tokens generated per request
//! (from `inkling/stats`).
//!
//! `cargo bench -p inkling-benches --bench typing_replay`; environment:
//! `INKLING_BENCH_FILE` (default: the stdlib's `textwrap.py`), `INKLING_BENCH_LINE`
//! (first line typed, default 120), `INKLING_BENCH_KEYSTROKES` (default 150, rounded up
//! to whole lines).

use std::time::{Duration, Instant};

use inkling_benches::{python_stdlib_file, quantile};
use inkling_harness::{LspClient, inline_items, vscode_capabilities};
use serde_json::Value;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

fn main() {
    let file =
        std::env::var("INKLING_BENCH_FILE").unwrap_or_else(|_| python_stdlib_file("textwrap"));
    let first_line = env_number("INKLING_BENCH_LINE", 120);
    let keystrokes = env_number("INKLING_BENCH_KEYSTROKES", 150);
    let source = std::fs::read_to_string(&file).expect("read the file to type");
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    assert!(
        first_line < lines.len(),
        "{file} has only {} lines",
        lines.len()
    );
    // Whole lines are typed, as when writing new code into the middle of a file: the
    // lines after them exist, the rest of the line being typed does not.
    let mut last_line = first_line;
    let mut typed_chars = 0;
    while last_line < lines.len() && typed_chars < keystrokes {
        typed_chars += lines[last_line].chars().count();
        last_line += 1;
    }
    let before: String = lines[..first_line].concat();
    // Typing starts on an empty line opened before the existing code below.
    let typed: Vec<char> = lines[first_line..last_line]
        .concat()
        .trim_end_matches('\n')
        .chars()
        .collect();
    let after: String = lines[last_line..].concat();
    let uri = "file:///bench/typed.py";

    let spawned = Instant::now();
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), Value::Null);
    client.open(uri, "python", &format!("{before}\n{after}"));
    client.wait_until_ready(Duration::from_secs(600));
    let ready = spawned.elapsed();
    let (mut line, mut column) = (first_line as u32, 0u32);
    let first = client.inline_completion(uri, line, column);
    let startup = spawned.elapsed();
    let first_items = inline_items(&first).len();

    let mut latencies = Vec::with_capacity(typed.len());
    let mut per_request = Vec::with_capacity(typed.len());
    let mut answered = 0;
    let mut version = 1;
    let mut previous = client.stats();
    for ch in typed {
        version += 1;
        let text = ch.to_string();
        client.edit(uri, version, (line, column), (line, column), &text);
        if ch == '\n' {
            line += 1;
            column = 0;
        } else {
            column += ch.len_utf16() as u32;
        }
        let asked = Instant::now();
        // Automatic, as an editor asks while the user types.
        let id = client.send_inline_completion_triggered(uri, line, column, 2);
        let response = client.response(id, Duration::from_secs(120));
        latencies.push(asked.elapsed());
        answered += usize::from(!inline_items(&response).is_empty());
        let stats = client.stats();
        per_request.push([
            counter(&stats, "promptTokensEvaluated") - counter(&previous, "promptTokensEvaluated"),
            counter(&stats, "promptTokensReused") - counter(&previous, "promptTokensReused"),
            counter(&stats, "generatedTokens") - counter(&previous, "generatedTokens"),
        ]);
        previous = stats;
    }
    client.shutdown_and_exit();

    let n = latencies.len();
    let mean = |i: usize| per_request.iter().map(|r| r[i]).sum::<u64>() as f64 / n as f64;
    latencies.sort();
    println!("typing replay of {file} from line {first_line}, {n} keystrokes");
    println!(
        "  start-up: model ready after {} ms, first completion after {} ms ({first_items} item)",
        ready.as_millis(),
        startup.as_millis()
    );
    println!(
        "  latency per request: p50 {} ms, p95 {} ms, max {} ms",
        quantile(&latencies, 0.5).as_millis(),
        quantile(&latencies, 0.95).as_millis(),
        latencies[n - 1].as_millis()
    );
    println!(
        "  per request: {:.1} prompt tokens evaluated, {:.1} reused from the KV cache, {:.1} generated",
        mean(0),
        mean(1),
        mean(2)
    );
    println!("  requests with a suggestion: {answered} of {n}");
}
