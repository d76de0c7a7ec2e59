//! Typing replay: start the server, then type real source files one keystroke at a
//! time, asking for an inline completion after each, the way an editor with ghost
//! text does. Every engine configuration runs side by side in one run, on the same
//! keystrokes: speculative decoding off, prompt lookup (the default), and the default
//! model as its own draft model (the only same-vocabulary model available here, so it
//! shows the mechanism's cost, not a speed-up).
//!
//! Reports per configuration: p50/p95 keystroke-to-answer latency, the share of prompt
//! tokens reused from the KV cache, answers served without the model (typed-through
//! cache), prompt size and the tokens unchanged from the document's previous prompt,
//! prompt assembly time (p50/p95), decode speed, draft acceptance, and the server's
//! peak RSS. Then the request after accepting a suggestion, with and without the
//! prefetch, and decode speed alone on long answers in code with repetition, per
//! drafter.
//!
//! `cargo bench -p inkling-benches --bench typing_replay`; environment:
//! `INKLING_BENCH_FILES` (comma-separated stdlib modules, default `textwrap,shlex`),
//! `INKLING_BENCH_KEYSTROKES` (per file, default 160, rounded up to whole lines),
//! `INKLING_BENCH_CONFIGS` (comma-separated subset of `off,lookup,draft`),
//! `INKLING_BENCH_PARTS` (comma-separated subset of `replay,accept,decode`).

use std::time::{Duration, Instant};

use inkling_benches::{
    Replay, ask_automatic, counter, delta, env_number, python_stdlib_file, quantile,
};
use inkling_harness::{LspClient, default_model_path, inline_items, vscode_capabilities};
use serde_json::{Value, json};

/// One engine configuration's results over all replays.
#[derive(Default)]
struct Results {
    latencies: Vec<Duration>,
    /// Requests the model served (not the typed-through cache): latency and tokens
    /// generated.
    model_served: Vec<(Duration, u64)>,
    requests: usize,
    answered: usize,
    evaluated: u64,
    reused: u64,
    typed_through: u64,
    generated_tokens: u64,
    generation_micros: u64,
    drafted: u64,
    accepted: u64,
    first_completion: Vec<Duration>,
    peak_rss_kib: u64,
    /// Prompts built by the engine, their tokens, and the tokens equal to the same
    /// document's previous prompt.
    prompts: u64,
    prompt_tokens: u64,
    prompt_unchanged: u64,
    /// The server's prompt assembly percentiles (`promptAssembly` of `inkling/stats`).
    assembly: Value,
}

fn start(options: &Value) -> LspClient {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), options.clone());
    client.wait_until_ready(Duration::from_secs(600));
    client
}

/// The peak resident set size of process `pid`, from `/proc`.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn replay(options: &Value, replays: &[Replay]) -> Results {
    let mut results = Results::default();
    let mut client = start(options);
    for (n, replay) in replays.iter().enumerate() {
        let uri = format!("file:///bench/typed{n}.py");
        client.open(&uri, "python", &replay.opened_text());
        let started = Instant::now();
        client.inline_completion(&uri, replay.first_line as u32, 0);
        results.first_completion.push(started.elapsed());
        let mut previous = client.stats();
        replay.type_into(&mut client, &uri, |client, line, column| {
            let (latency, response) = ask_automatic(client, &uri, line, column);
            results.latencies.push(latency);
            results.requests += 1;
            results.answered += usize::from(!inline_items(&response).is_empty());
            let stats = client.stats();
            results.evaluated += delta(&stats, &previous, "promptTokensEvaluated");
            results.reused += delta(&stats, &previous, "promptTokensReused");
            let typed_through = delta(&stats, &previous, "typedThrough");
            results.typed_through += typed_through;
            let generated = delta(&stats, &previous, "generatedTokens");
            if typed_through == 0 {
                results.model_served.push((latency, generated));
            }
            results.generated_tokens += generated;
            results.generation_micros += delta(&stats, &previous, "generationMicros");
            results.drafted += delta(&stats, &previous, "draftedTokens");
            results.accepted += delta(&stats, &previous, "acceptedTokens");
            let prompt_tokens = delta(&stats, &previous, "promptTokens");
            results.prompts += u64::from(prompt_tokens > 0);
            results.prompt_tokens += prompt_tokens;
            results.prompt_unchanged += delta(&stats, &previous, "promptTokensUnchanged");
            previous = stats;
        });
    }
    results.assembly = client.stats()["promptAssembly"].clone();
    results.peak_rss_kib = peak_rss_kib(client.pid());
    client.shutdown_and_exit();
    results
}

/// Opens `uri` with the lines before `line` and that line's indentation, as when
/// starting to write it; returns the cursor's column.
fn open_at_line_start(client: &mut LspClient, uri: &str, lines: &[&str], line: usize) -> u32 {
    let indent: String = lines[line].chars().take_while(|c| *c == ' ').collect();
    client.open(
        uri,
        "python",
        &format!("{}{indent}", lines[..line].concat()),
    );
    indent.len() as u32
}

/// How long a user looks at a suggestion before accepting it.
const READING_TIME: Duration = Duration::from_millis(500);

/// Accepting suggestions: at each line start, ask (invoked), look at the answer for
/// [`READING_TIME`], accept it, and ask again at its end, as an editor does after an
/// accept. Returns the latencies of those second requests and how many were answered
/// without the model.
fn accept_latency(options: &Value, text: &str, lines: &[usize]) -> (Vec<Duration>, u64) {
    let mut client = start(options);
    let source_lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut latencies = Vec::new();
    let mut from_memory = 0;
    for (n, &line) in lines.iter().enumerate() {
        let uri = format!("file:///bench/accept{n}.py");
        let column = open_at_line_start(&mut client, &uri, &source_lines, line);
        // Invoked: an automatic request would give up on this cold prompt.
        let response = client.inline_completion(&uri, line as u32, column);
        let Some(answer) = inline_items(&response)
            .first()
            .and_then(|item| item["insertText"].as_str().map(str::to_owned))
        else {
            continue;
        };
        std::thread::sleep(READING_TIME);
        client.edit(
            &uri,
            2,
            (line as u32, column),
            (line as u32, column),
            &answer,
        );
        let end_line = line as u32 + answer.matches('\n').count() as u32;
        let last = answer.rsplit('\n').next().unwrap_or_default();
        let end_column =
            if answer.contains('\n') { 0 } else { column } + last.encode_utf16().count() as u32;
        let before = client.stats();
        let (latency, next) = ask_automatic(&mut client, &uri, end_line, end_column);
        latencies.push(latency);
        let stats = client.stats();
        from_memory += delta(&stats, &before, "typedThrough");
        if std::env::var_os("INKLING_BENCH_VERBOSE").is_some() {
            eprintln!(
                "accepted {answer:?}; then {:?} in {:?}; prefetch {}",
                inline_items(&next).first().map(|i| i["insertText"].clone()),
                latencies.last().unwrap(),
                stats["prefetch"]
            );
        }
    }
    client.shutdown_and_exit();
    (latencies, from_memory)
}

/// Decode speed on long raw answers at line starts in code with repetition:
/// (tokens per second, drafted, accepted).
fn decode_speed(options: &Value, text: &str, lines: &[usize]) -> (f64, u64, u64) {
    let mut options = options.clone();
    options["postprocess"] = json!(false);
    options["maxTokens"] = json!(96);
    options["generationTimeLimitMs"] = json!(600_000);
    let mut client = start(&options);
    let source_lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (n, &line) in lines.iter().enumerate() {
        let uri = format!("file:///bench/decode{n}.py");
        let column = open_at_line_start(&mut client, &uri, &source_lines, line);
        client.inline_completion(&uri, line as u32, column);
    }
    let stats = client.stats();
    client.shutdown_and_exit();
    let seconds = counter(&stats, "generationMicros") as f64 / 1e6;
    (
        counter(&stats, "generatedTokens") as f64 / seconds,
        counter(&stats, "draftedTokens"),
        counter(&stats, "acceptedTokens"),
    )
}

fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn main() {
    let modules = std::env::var("INKLING_BENCH_FILES").unwrap_or_else(|_| "textwrap,shlex".into());
    let keystrokes = env_number("INKLING_BENCH_KEYSTROKES", 160);
    let wanted =
        std::env::var("INKLING_BENCH_CONFIGS").unwrap_or_else(|_| "off,lookup,draft".into());
    let replays: Vec<Replay> = modules
        .split(',')
        .map(|m| Replay::of(m.trim(), keystrokes))
        .collect();
    let model = default_model_path();
    let configs = [
        ("off", "no speculation (the default)", json!({})),
        ("lookup", "prompt lookup", json!({"promptLookup": true})),
        (
            "draft",
            "draft model (the model itself)",
            json!({"draftModel": model}),
        ),
    ];
    let configs: Vec<_> = configs
        .into_iter()
        .filter(|(key, _, _)| wanted.split(',').any(|w| w.trim() == *key))
        .collect();

    println!(
        "typing replay: {} ({} keystrokes each), automatic requests, one at a time",
        Replay::names(&replays),
        keystrokes
    );
    let parts =
        std::env::var("INKLING_BENCH_PARTS").unwrap_or_else(|_| "replay,accept,decode".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    let mut plain_speed = None;
    for (key, label, options) in configs.iter().filter(|_| part("replay")) {
        let mut results = replay(options, &replays);
        let n = results.latencies.len();
        results.latencies.sort();
        let speed = results.generated_tokens as f64 / (results.generation_micros as f64 / 1e6);
        if *key == "off" {
            plain_speed = Some(speed);
        }
        println!("\n[{label}]");
        println!(
            "  latency per keystroke: p50 {} ms, p95 {} ms, max {} ms ({n} requests; {} answered)",
            quantile(&results.latencies, 0.5).as_millis(),
            quantile(&results.latencies, 0.95).as_millis(),
            results.latencies[n - 1].as_millis(),
            results.answered,
        );
        println!(
            "  first completion per file: {:?} ms",
            results
                .first_completion
                .iter()
                .map(Duration::as_millis)
                .collect::<Vec<_>>()
        );
        println!(
            "  prompt tokens reused from the cache: {:.1}% ({} reused, {} evaluated)",
            pct(results.reused, results.reused + results.evaluated),
            results.reused,
            results.evaluated
        );
        println!(
            "  prompts built while typing: {}, {:.0} tokens on average; unchanged from the document's previous prompt: {:.1}% ({} of {} tokens)",
            results.prompts,
            results.prompt_tokens as f64 / results.prompts.max(1) as f64,
            pct(results.prompt_unchanged, results.prompt_tokens),
            results.prompt_unchanged,
            results.prompt_tokens
        );
        println!(
            "  prompt assembly (context, preamble, layout, tokens) per request: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms ({} requests)",
            results.assembly["p50Ms"].as_f64().unwrap_or(f64::NAN),
            results.assembly["p95Ms"].as_f64().unwrap_or(f64::NAN),
            results.assembly["p99Ms"].as_f64().unwrap_or(f64::NAN),
            results.assembly["samples"]
        );
        println!(
            "  answered without the model (typed-through): {} of {n} ({:.1}%)",
            results.typed_through,
            pct(results.typed_through, n as u64)
        );
        println!(
            "  decode: {:.1} tokens/s over {} generated tokens; drafts accepted {} of {} ({:.1}%)",
            speed,
            results.generated_tokens,
            results.accepted,
            results.drafted,
            pct(results.accepted, results.drafted)
        );
        // The requests the model served (not the typed-through cache).
        let mut model_latencies: Vec<Duration> = results
            .model_served
            .iter()
            .map(|&(latency, _)| latency)
            .collect();
        model_latencies.sort();
        if let (Some(plain), false) = (plain_speed, model_latencies.is_empty()) {
            let mut alone: Vec<Duration> = results
                .model_served
                .iter()
                .map(|&(_, tokens)| Duration::from_secs_f64(tokens as f64 / plain))
                .collect();
            alone.sort();
            let p50_alone = quantile(&alone, 0.5);
            println!(
                "  requests the model served: {}; latency p50 {} ms, p95 {} ms; generating their tokens alone at plain speed: p50 {} ms; ratio of the p50s {:.2}",
                model_latencies.len(),
                quantile(&model_latencies, 0.5).as_millis(),
                quantile(&model_latencies, 0.95).as_millis(),
                p50_alone.as_millis(),
                quantile(&model_latencies, 0.5).as_secs_f64() / p50_alone.as_secs_f64().max(1e-3)
            );
        }
        println!(
            "  peak RSS of the server: {} MiB",
            results.peak_rss_kib / 1024
        );
    }

    // Accepting a suggestion and asking again, with and without the prefetch.
    let text = std::fs::read_to_string(python_stdlib_file("textwrap")).expect("read");
    let starts: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i > 100 && l.starts_with("        ") && !l.trim().is_empty())
        .map(|(i, _)| i)
        .step_by(9)
        .take(12)
        .collect();
    println!(
        "\naccepting a suggestion after reading it for {} ms, then asking again, at {} line starts in textwrap.py:",
        READING_TIME.as_millis(),
        starts.len()
    );
    let accept_configs = [
        ("prefetch on (the default)", json!({})),
        ("prefetch off", json!({"prefetch": false})),
    ];
    for (label, options) in accept_configs.iter().filter(|_| part("accept")) {
        let (mut latencies, from_memory) = accept_latency(options, &text, &starts);
        latencies.sort();
        if latencies.is_empty() {
            println!("  {label}: no suggestion to accept");
            continue;
        }
        println!(
            "  {label}: p50 {} ms, p95 {} ms, max {} ms; answered without the model {from_memory} of {}",
            quantile(&latencies, 0.5).as_millis(),
            quantile(&latencies, 0.95).as_millis(),
            latencies[latencies.len() - 1].as_millis(),
            latencies.len()
        );
    }

    // Decode speed alone, on long answers where code repeats itself.
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i > 100 && l.starts_with("        ") && l.trim().starts_with("self."))
        .map(|(i, _)| i)
        .step_by(3)
        .take(6)
        .collect();
    println!(
        "\ndecode speed on 96-token raw answers at {} line starts in textwrap.py (code with repetition):",
        lines.len()
    );
    let mut plain = None;
    for (key, label, options) in configs.iter().filter(|_| part("decode")) {
        let (speed, drafted, accepted) = decode_speed(options, &text, &lines);
        if *key == "off" {
            plain = Some(speed);
        }
        let speedup = plain.map_or(String::new(), |p| format!(", {:.2}× plain", speed / p));
        println!(
            "  {label}: {speed:.1} tokens/s{speedup}; drafts accepted {accepted} of {drafted} ({:.1}%)",
            pct(accepted, drafted)
        );
    }
}
