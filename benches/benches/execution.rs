//! Completion quality scored by execution, on real code that nobody here wrote: one
//! line of a Python standard-library function is removed, inkling (the real binary,
//! the default model, over LSP) is asked for it, its suggestion is put in, and the
//! module's own tests (`test.test_MODULE` of the same Python) run against the
//! modified module, copied into a directory that shadows the standard library.
//!
//! The tasks come from `benches/execution/tasks.py`: simple one-line statements in
//! function bodies, picked with a fixed seed, each kept only if the tests fail with
//! it replaced by `pass` (and pass without the change), so every task is one the
//! tests notice. They are cached under the target directory (picking runs the tests
//! some hundred times).
//!
//! The first row is the peer, `llama-server`: llama.cpp's server on the same model
//! (`scripts/llama-server`, or `$INKLING_LLAMA_SERVER`), asked greedily at
//! `/completion` for one line with the text before the cursor only, as many whole
//! lines of it as fit in 768 tokens (inkling's `prefixTokens` default): the plain
//! prefix prompt a simple client sends, its answer put in as it comes. The row
//! `llama-server-sampled` (only when `INKLING_EXEC_ROWS` names it: it runs the tests
//! about a thousand times) adds lines sampled from the same prompt: its "any item"
//! is how often the model's own lines hold one that passes, the most any choice
//! among them could reach.
//!
//! Each other row is one inkling server, started with the row's flags
//! (`invoked-single`: one candidate; `invoked`, `automatic`: the defaults, three
//! candidates for invoked requests; `invoked-rescored`: those rescored by the text
//! after the cursor), on every task:
//! - **invoked**: the module is open in the editor; the line's code is deleted (the
//!   cursor at its indentation, the lines after it still there) and a completion is
//!   invoked, as a user who asks for one;
//! - **automatic**: the masked module is opened fresh with the cursor at the line
//!   (`inkling/didFocus`, as our VS Code extension and Neovim plugin send it), the
//!   user looks at it for 2 s (the server warms the prompt there meanwhile), then an
//!   automatic request comes, as an editor sends it while typing. The modules take
//!   turns, so each opening is cold.
//!
//! Reported per row: **pass@1** (the first item makes the tests pass), **any item**
//! (one of the items, up to three for invoked requests, does: what a better order
//! of the candidates could reach), **line exact** (the first item's first line is
//! the removed code), items shown, and the p50/p95 latency of the requests.
//!
//! `cargo bench -p inkling-benches --bench execution`; environment:
//! `INKLING_EXEC_PER_MODULE` (tasks per module, default 3), `INKLING_EXEC_SEED`
//! (default 14), `INKLING_EXEC_ROWS` (comma-separated subset of the row names),
//! `INKLING_EXEC_VERBOSE=1` (every suggestion, on stderr), `INKLING_BENCH_OPTIONS` (a
//! JSON object of inkling options for every inkling row, e.g.
//! `{"promptTimeLimitMs": 1500}`), `INKLING_LLAMA_SERVER` (the peer's binary),
//! `INKLING_EXEC_SAMPLES` (lines sampled per task, default 20). Both sides run the
//! default model.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use inkling_benches::llama_server::{
    LlamaServer, llama_server_binary, llama_server_version, tokenize,
};
use inkling_benches::{quantile, with_bench_options};
use inkling_harness::http::try_post;
use inkling_harness::{Launch, LspClient, default_model_path, inline_items, vscode_capabilities};
use serde_json::{Value, json};

/// Modules whose tests run in about a second and notice removed lines.
const MODULES: &[&str] = &[
    "textwrap",
    "shlex",
    "fnmatch",
    "colorsys",
    "heapq",
    "bisect",
    "string",
    "glob",
    "difflib",
    "base64",
    "ipaddress",
    "fractions",
    "quopri",
    "reprlib",
    "graphlib",
    "configparser",
    "netrc",
    "getopt",
    "optparse",
    "mimetypes",
    "copy",
    "pprint",
];

/// How long the user looks at a freshly opened file before an automatic request.
const LOOK: Duration = Duration::from_secs(2);

/// One removed line.
struct Task {
    module: String,
    file: String,
    /// 0-based.
    line: usize,
    /// The line as the module has it, with its indentation and line break.
    text: String,
}

impl Task {
    fn indent(&self) -> &str {
        &self.text[..self.text.len() - self.text.trim_start().len()]
    }

    /// What was removed: the line's code.
    fn code(&self) -> &str {
        self.text.trim()
    }
}

/// One server configuration and how it is asked.
struct Row {
    name: &'static str,
    server: Server,
    invoked: bool,
    args: &'static [&'static str],
}

/// Who answers a row's requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    /// The real inkling binary over LSP, started with the row's flags.
    Inkling,
    /// The peer: llama.cpp's `llama-server` on the same model, asked greedily at
    /// `/completion` for one line, with the text before the cursor only (whole lines,
    /// within inkling's own default budget for it): the plain prefix prompt.
    Peer,
    /// The same, and then [`samples`] more lines sampled from the model at
    /// [`SAMPLING_TEMPERATURE`], each a later item: the row's "any item" is how often
    /// the model's own lines contain one that passes, a ceiling for any choice among
    /// them (its pass@1 is the peer's).
    PeerSampled,
}

/// Lines sampled per task in the `llama-server-sampled` row, unless
/// `INKLING_EXEC_SAMPLES` says otherwise.
const DEFAULT_SAMPLES: usize = 20;

/// Temperature of the sampled lines (with top-k 40 and top-p 0.95, llama.cpp's
/// defaults for them, and its other defaults, such as min-p 0.05).
const SAMPLING_TEMPERATURE: f64 = 0.8;

fn samples() -> usize {
    std::env::var("INKLING_EXEC_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SAMPLES)
}

/// The peer's budget for the text before the cursor: inkling's `prefixTokens` default.
const PEER_PREFIX_TOKENS: usize = 768;

/// Most tokens the peer generates for a line.
const PEER_MAX_TOKENS: usize = 96;

/// The peer, then each technique off and on. Automatic requests offer one candidate
/// and are not rescored, so the defaults are their only row.
const ROWS: &[Row] = &[
    Row {
        name: "llama-server",
        server: Server::Peer,
        invoked: true,
        args: &[],
    },
    Row {
        name: "llama-server-sampled",
        server: Server::PeerSampled,
        invoked: true,
        args: &[],
    },
    Row {
        name: "invoked-single",
        server: Server::Inkling,
        invoked: true,
        args: &["--candidates", "1"],
    },
    Row {
        name: "invoked",
        server: Server::Inkling,
        invoked: true,
        args: &[],
    },
    Row {
        name: "invoked-rescored",
        server: Server::Inkling,
        invoked: true,
        args: &["--suffix-rescoring", "true"],
    },
    Row {
        name: "automatic",
        server: Server::Inkling,
        invoked: false,
        args: &[],
    },
];

fn tasks_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("execution/tasks.py")
}

/// The tasks for `seed`, picked by `tasks.py` or read from the cache it left (kept
/// while the seed, the modules and the script's text are the same).
fn tasks(seed: &str, per_module: usize) -> Vec<Task> {
    let script = std::fs::read(tasks_script()).expect("read tasks.py");
    let mut hasher = DefaultHasher::new();
    script.hash(&mut hasher);
    let key = format!(
        "{seed}-{per_module}-{}-{:x}",
        MODULES.join(","),
        hasher.finish()
    );
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("execution-tasks.json");
    let cached: Option<Value> = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .filter(|value: &Value| value["key"] == key.as_str());
    let list = match cached {
        Some(value) => value["tasks"].clone(),
        None => {
            eprintln!("picking tasks (runs the modules' tests, a few minutes)…");
            let output = Command::new("python3")
                .arg(tasks_script())
                .arg(seed)
                .arg(per_module.to_string())
                .args(MODULES)
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("python3 runs");
            assert!(output.status.success(), "tasks.py failed");
            let list: Value = serde_json::from_slice(&output.stdout).expect("tasks.py JSON");
            let _ = std::fs::write(&cache, json!({"key": key, "tasks": list}).to_string());
            list
        }
    };
    list.as_array()
        .expect("a list of tasks")
        .iter()
        .map(|t| Task {
            module: t["module"].as_str().expect("module").to_owned(),
            file: t["file"].as_str().expect("file").to_owned(),
            line: t["line"].as_u64().expect("line") as usize,
            text: t["text"].as_str().expect("text").to_owned(),
        })
        .collect()
}

/// Whether the module's tests pass with the task's line replaced by its indentation
/// and `suggestion` (all its lines).
fn passes(task: &Task, suggestion: &str) -> bool {
    if suggestion.trim_end() == task.code() {
        // The unmodified module: its tests passed when the task was picked.
        return true;
    }
    Command::new("python3")
        .arg(tasks_script())
        .args(["--run", &task.module, &task.file, &task.line.to_string()])
        .arg(format!("{}{suggestion}", task.indent()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The module's text with the task's line reduced to its indentation.
fn masked(source: &str, task: &Task) -> String {
    source
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, line)| {
            if i == task.line {
                format!("{}\n", task.indent())
            } else {
                line.to_owned()
            }
        })
        .collect()
}

fn uri_of(module: &str) -> String {
    format!("file:///bench/execution/{module}.py")
}

/// The items' texts of each task, best first, and the request's latency.
fn ask_all(
    row: &Row,
    tasks: &[Task],
    sources: &HashMap<String, String>,
) -> Vec<(Vec<String>, Duration)> {
    let mut client = LspClient::launch(&Launch {
        args: row.args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
    });
    client.initialize(vscode_capabilities(), with_bench_options(json!({})));
    client.wait_until_ready(Duration::from_secs(600));
    let mut answers: Vec<Option<(Vec<String>, Duration)>> = vec![None; tasks.len()];
    let mut versions: HashMap<&str, i32> = HashMap::new();
    let ask = |client: &mut LspClient, uri: &str, task: &Task, kind: u32| {
        let column = task.indent().encode_utf16().count() as u32;
        let asked = Instant::now();
        let id = client.send_inline_completion_triggered(uri, task.line as u32, column, kind);
        let response = client.response(id, Duration::from_secs(120));
        let latency = asked.elapsed();
        let texts = inline_items(&response)
            .iter()
            .filter_map(|item| item["insertText"].as_str().map(str::to_owned))
            .filter(|text| !text.is_empty())
            .collect();
        (texts, latency)
    };
    if row.invoked {
        // Module by module, each opened once and edited: the line deleted, asked, put back.
        for (i, task) in tasks.iter().enumerate() {
            let uri = uri_of(&task.module);
            let version = versions.entry(&task.module).or_insert_with(|| {
                client.open(&uri, "python", &sources[&task.module]);
                1
            });
            let line = task.line as u32;
            let indent = task.indent().encode_utf16().count() as u32;
            let code = task.text.trim_end_matches(['\n', '\r']);
            let end = code.encode_utf16().count() as u32;
            *version += 1;
            client.edit(&uri, *version, (line, indent), (line, end), "");
            answers[i] = Some(ask(&mut client, &uri, task, 1));
            *version += 1;
            client.edit(
                &uri,
                *version,
                (line, indent),
                (line, indent),
                code.trim_start(),
            );
        }
    } else {
        // The modules take turns, so that no opening finds its module's cache warm.
        let mut order: Vec<usize> = (0..tasks.len()).collect();
        let rank = |i: usize| {
            tasks[..i]
                .iter()
                .filter(|t| t.module == tasks[i].module)
                .count()
        };
        order.sort_by_key(|&i| (rank(i), i));
        for i in order {
            let task = &tasks[i];
            let uri = uri_of(&task.module);
            if versions.insert(&task.module, 1).is_some() {
                client.notify(
                    "textDocument/didClose",
                    json!({"textDocument": {"uri": uri}}),
                );
            }
            client.open(&uri, "python", &masked(&sources[&task.module], task));
            // Where the cursor is, as our VS Code extension and Neovim plugin say when
            // a file becomes active: the server warms the prompt there.
            let column = task.indent().encode_utf16().count() as u32;
            client.focus(&uri, task.line as u32, column);
            sleep(LOOK);
            answers[i] = Some(ask(&mut client, &uri, task, 2));
        }
    }
    client.shutdown_and_exit();
    answers
        .into_iter()
        .map(|a| a.expect("every task asked"))
        .collect()
}

/// The peer's answer for each task (one line at most) and its latency; with
/// `samples`, then that many lines sampled (seeded), the distinct
/// ones as later items (the latency is the greedy line's).
fn ask_llama_server(
    tasks: &[Task],
    sources: &HashMap<String, String>,
    samples: usize,
) -> Result<Vec<(Vec<String>, Duration)>, String> {
    let binary = llama_server_binary()?;
    let log = std::env::temp_dir().join("inkling-execution-llama-server.log");
    let server = LlamaServer::start(&binary, &default_model_path(), &log)?;
    eprintln!(
        "llama-server: {} ({}), {}; log {}",
        binary.display(),
        llama_server_version(&binary),
        LlamaServer::FLAGS.join(" "),
        log.display()
    );
    let mut answers = Vec::new();
    for task in tasks {
        let before: String = sources[&task.module]
            .split_inclusive('\n')
            .take(task.line)
            .collect();
        let prompt = last_lines_within(server.address, &before, task.indent(), PEER_PREFIX_TOKENS)?;
        let line = |sampling: Value| -> Result<String, String> {
            let mut body = json!({
                "prompt": prompt,
                "n_predict": PEER_MAX_TOKENS,
                "stop": ["\n"],
                "cache_prompt": true,
            });
            body.as_object_mut()
                .expect("an object")
                .extend(sampling.as_object().expect("an object").clone());
            let (status, answer) = try_post(server.address, "/completion", &body.to_string())
                .map_err(|e| format!("/completion: {e}"))?;
            if status != 200 {
                return Err(format!("/completion answered {status}: {answer}"));
            }
            let content: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
            Ok(content["content"]
                .as_str()
                .unwrap_or_default()
                .trim_end()
                .to_owned())
        };
        let asked = Instant::now();
        let greedy = line(json!({"temperature": 0.0}))?;
        let latency = asked.elapsed();
        // The greedy line first, even empty (it passes nothing), so that the row's
        // pass@1 is the peer's.
        let mut texts = vec![greedy];
        for seed in 0..samples {
            let sampled = line(json!({
                "temperature": SAMPLING_TEMPERATURE,
                "top_k": 40,
                "top_p": 0.95,
                "seed": seed,
            }))?;
            // Exactly: the line is put in after the task's indentation, so leading
            // blanks change what runs.
            if !sampled.is_empty() && !texts.contains(&sampled) {
                texts.push(sampled);
            }
        }
        // Nothing at all is nothing shown.
        if texts.iter().all(String::is_empty) {
            texts.clear();
        }
        answers.push((texts, latency));
    }
    Ok(answers)
}

/// The last whole lines of `before`, then `line_start`, as many lines as fit in
/// `budget` tokens of the server's model.
fn last_lines_within(
    address: std::net::SocketAddr,
    before: &str,
    line_start: &str,
    budget: usize,
) -> Result<String, String> {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(before.match_indices('\n').map(|(at, _)| at + 1))
        .collect();
    let text_from = |line: usize| format!("{}{line_start}", &before[starts[line]..]);
    let fits = |line: usize| -> Result<bool, String> {
        // With the BOS token `/completion` adds.
        let body = json!({"content": text_from(line), "add_special": true});
        Ok(tokenize(address, &body)?.len() <= budget)
    };
    // The first line from which the text fits (fitting only grows with it).
    let (mut low, mut high) = (0, starts.len() - 1);
    while low < high {
        let middle = (low + high) / 2;
        if fits(middle)? {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(text_from(low))
}

#[derive(Default)]
struct Score {
    tasks: usize,
    passed: usize,
    passed_any: usize,
    exact: usize,
    shown: usize,
    latencies: Vec<Duration>,
}

impl Score {
    fn report(&mut self, label: &str) {
        self.latencies.sort();
        let pct = |n: usize| 100.0 * n as f64 / self.tasks.max(1) as f64;
        let ms = |q: f64| quantile(&self.latencies, q).as_millis();
        println!(
            "  {label:<28} pass@1 {:.3} ({}/{})  any item {:.3} ({})  line exact {:>5.1}% ({})  shown {:>5.1}%  latency p50 {} ms  p95 {} ms",
            self.passed as f64 / self.tasks.max(1) as f64,
            self.passed,
            self.tasks,
            self.passed_any as f64 / self.tasks.max(1) as f64,
            self.passed_any,
            pct(self.exact),
            self.exact,
            pct(self.shown),
            ms(0.5),
            ms(0.95),
        );
    }
}

fn main() {
    let per_module: usize = std::env::var("INKLING_EXEC_PER_MODULE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed = std::env::var("INKLING_EXEC_SEED").unwrap_or_else(|_| "14".into());
    let wanted: Option<Vec<String>> = std::env::var("INKLING_EXEC_ROWS")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let verbose = std::env::var_os("INKLING_EXEC_VERBOSE").is_some();
    let tasks = tasks(&seed, per_module);
    let sources: HashMap<String, String> = tasks
        .iter()
        .map(|t| {
            let text = std::fs::read_to_string(&t.file).expect("read the module");
            (t.module.clone(), text)
        })
        .collect();
    println!(
        "{} tasks in {} modules (seed {seed}); python: {}",
        tasks.len(),
        sources.len(),
        tasks.first().map_or("", |t| t.file.as_str())
    );
    // Test runs, by task and suggestion: rows that suggest the same text share them.
    let mut verdicts: HashMap<(usize, String), bool> = HashMap::new();
    for row in ROWS {
        let run = match &wanted {
            Some(names) => names.iter().any(|n| n == row.name),
            // The sampled row runs the tests about a thousand times: asked for only.
            None => row.server != Server::PeerSampled,
        };
        if !run {
            continue;
        }
        let started = Instant::now();
        let answers = match row.server {
            Server::Inkling => ask_all(row, &tasks, &sources),
            Server::Peer | Server::PeerSampled => match ask_llama_server(
                &tasks,
                &sources,
                if row.server == Server::PeerSampled {
                    samples()
                } else {
                    0
                },
            ) {
                Ok(answers) => answers,
                Err(e) => {
                    println!("  {:<28} NOT RUN: {e}", row.name);
                    continue;
                }
            },
        };
        let mut score = Score::default();
        for (i, (task, (texts, latency))) in tasks.iter().zip(answers).enumerate() {
            score.tasks += 1;
            score.latencies.push(latency);
            let Some(text) = texts.first() else {
                continue;
            };
            score.shown += usize::from(!text.is_empty());
            let first_line = text.lines().next().unwrap_or_default().trim_end();
            let exact = first_line == task.code();
            // An empty first item (the sampled row's, see `ask_llama_server`) passes
            // nothing.
            let mut verdict = |text: &String| {
                !text.is_empty()
                    && *verdicts
                        .entry((i, text.clone()))
                        .or_insert_with(|| passes(task, text))
            };
            let passed = verdict(text);
            let passed_any = passed || texts[1..].iter().any(&mut verdict);
            score.exact += usize::from(exact);
            score.passed += usize::from(passed);
            score.passed_any += usize::from(passed_any);
            if verbose {
                eprintln!(
                    "{} {}:{} {} expected {:?} got {:?}",
                    row.name,
                    task.module,
                    task.line + 1,
                    match (passed, passed_any) {
                        (true, _) => "PASS",
                        (false, true) => "later item passes",
                        (false, false) => "fail",
                    },
                    task.code(),
                    texts
                );
            }
        }
        score.report(&format!("{} {}", row.name, row.args.join(" ")));
        eprintln!(
            "({} took {:.0} s)",
            row.name,
            started.elapsed().as_secs_f64()
        );
    }
}
