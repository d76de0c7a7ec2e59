//! `inkling-demo`: a real completion session on the default model.
//!
//! Starts `inkling`, opens a source file the way an editor does, and at a series
//! of cursor positions (the middle of each code line, as if the user had typed the
//! file up to there) asks for an inline completion, printing the suggestion, what
//! the file really says next, and the latency.
//!
//! Usage: `inkling-demo [FILE]` (default: `tests/fixtures/sample.py`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use inkling_harness::{LspClient, inline_items, vscode_capabilities};
use serde_json::Value;

fn main() {
    let path = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample.py"),
        PathBuf::from,
    );
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let language = match path.extension().and_then(|e| e.to_str()) {
        Some("rs") => "rust",
        Some("js") => "javascript",
        Some("ts") => "typescript",
        Some("go") => "go",
        Some("c" | "h") => "c",
        Some("cpp" | "cc" | "hpp") => "cpp",
        _ => "python",
    };
    let uri = format!(
        "file://{}",
        path.canonicalize().unwrap_or(path.clone()).display()
    );

    println!("inkling demo on {}", path.display());
    let started = Instant::now();
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), Value::Null);
    client.wait_until_ready(Duration::from_secs(600));
    println!("model ready after {} ms\n", started.elapsed().as_millis());

    let lines: Vec<&str> = source.lines().collect();
    client.open(&uri, language, "");
    let mut version = 1;
    let mut latencies = Vec::new();
    let mut exact = 0;
    for (number, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if code.len() < 12 || code.starts_with('#') || code.starts_with("\"\"\"") {
            continue;
        }
        // Cursor after the first half of the line's code, at a character boundary.
        let indent = line.len() - code.len();
        let mut cut = indent + code.len() / 2;
        while !line.is_char_boundary(cut) {
            cut += 1;
        }
        let mut text = lines[..number].join("\n");
        if number > 0 {
            text.push('\n');
        }
        text.push_str(&line[..cut]);
        version += 1;
        client.replace(&uri, version, &text);
        let column = line[..cut].encode_utf16().count() as u32;
        let asked = Instant::now();
        let response = client.inline_completion(&uri, number as u32, column);
        let latency = asked.elapsed();
        latencies.push(latency);
        let suggestion = inline_items(&response)
            .first()
            .and_then(|item| item["insertText"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let first_line = suggestion.lines().next().unwrap_or("");
        let expected = &line[cut..];
        let hit = first_line.trim_end() == expected.trim_end();
        exact += usize::from(hit);
        println!(
            "{:>3} │ {}\x1b[2m{}\x1b[0m   [{} ms]{}",
            number + 1,
            &line[..cut],
            first_line,
            latency.as_millis(),
            if hit { "  ✓ exact" } else { "" }
        );
        if !hit {
            println!(
                "    │ {}{}  (the file)",
                " ".repeat(line[..cut].chars().count()),
                expected
            );
        }
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "\n{} suggestions, {} exactly right; latency p50 {} ms, p95 {} ms",
        latencies.len(),
        exact,
        pick(0.5).as_millis(),
        pick(0.95).as_millis()
    );
    let stats = client.stats();
    println!("engine: {stats}");
    client.shutdown_and_exit();
}
