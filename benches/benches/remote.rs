//! Remote engines while typing: the typing replay (as `typing_replay`: whole lines in
//! the middle of a standard-library file, one keystroke at a time, an automatic
//! inline completion after each, answered before the next keystroke) against the
//! local engine alone and against a remote engine reached through a network played by
//! a proxy, in one run, on the same keystrokes:
//!
//! - `local`: no remote;
//! - `remote50`, `remote300`: a second, real inkling (`inkling http`, its `/infill`
//!   streamed, the `llama-server` preset) behind a proxy that holds each request for
//!   50 ms or 300 ms before forwarding it — a round trip of that length, since every
//!   byte of the answer then arrives that much later (`inkling_benches::proxy`);
//! - `failing`: the same at 50 ms, with a deterministic pseudo-random 20% of the
//!   requests the proxy sees failed: half answered 500, half dropped without answer
//!   (a dropped request may be sent again once, before its first byte, and that is a
//!   request the proxy sees too).
//!
//! The remote policy is `triggers: "all"`, so automatic requests go remote; the rest
//! is the defaults (the hedge delay adapts to the remote's p90 time to first token,
//! both starting at once until five are measured; while that is no shorter than the
//! local engine's median time to an answer, local goes first and the remote hedges
//! local's tail). Each
//! configuration starts fresh processes, so no
//! cache carries over. The file is opened with `inkling/didFocus` at the typing
//! position and looked at for 2 s, as in the `peer` benchmark: the local engine warms
//! its prompt (warming never goes remote, so the remote's first prompt is cold).
//!
//! Both engines run on this machine's CPU (2 cores here): a real remote has its own.
//! So every inkling gets `--threads 1` by default (`INKLING_BENCH_THREADS`; 0 for
//! all cores), the local-only one too so that it is the same engine: each engine
//! has a core of its own, as if on two machines, and a hedge does not make the two
//! fight over the same cores (with all cores each, a hedged request runs two
//! two-thread engines on two cores). The bench's client, the proxy and the local
//! engine's background work (prefetch, warming) still share the CPU, and so would
//! the remote's work on requests the local engine won (it runs until the remote
//! notices the dropped connection): the remote's threads get the lowest CPU
//! priority (`nice` 19), so they take no CPU time the local side wants, as on a
//! machine of their own (`INKLING_BENCH_REMOTE_NICE=0` to not; memory bandwidth
//! stays shared).
//!
//! Reported per configuration: requests, latency per keystroke (keystroke to answer:
//! p50, p95, mean, max), where the answers came from (`inkling/stats` `backends`:
//! remote or local wins; `typedThrough`: from memory), hedges started, fallbacks,
//! remote failures, breaker trips and requests the open breaker kept local, the hedge
//! delay, and what the proxy saw; then the targets: with a healthy remote, p95
//! no worse than local alone; with a failing remote, no request waiting longer than
//! the hedge delay plus the local engine's time (local alone's p95 and max stand for
//! it; the hedge delay counts only when the remote went first); then a table. The configurations run in passes (`INKLING_BENCH_ROUNDS`,
//! default 2), each in the reverse order of the one before, and the targets and the
//! table pool a configuration's passes: this machine drifts by tens of ms in p95 over
//! a few minutes, and a fixed order would hand the drift to the later
//! configurations.
//!
//! `cargo bench -p inkling-benches --bench remote`; environment: `INKLING_BENCH_FILES`
//! (comma-separated stdlib modules, default `textwrap`), `INKLING_BENCH_KEYSTROKES`
//! (per file, default 120, rounded up to whole lines), `INKLING_BENCH_CONFIGS`
//! (comma-separated subset of `local,remote50,remote300,failing`),
//! `INKLING_BENCH_THREADS` (default 1), `INKLING_BENCH_REMOTE_NICE` (default 1),
//! `INKLING_BENCH_ROUNDS` (default 2),
//! `INKLING_BENCH_VERBOSE=1` (each keystroke on stderr).

use std::time::Duration;

use inkling_benches::proxy::{Counts, Network, Proxy};
use inkling_benches::{Latencies, Replay, ask_automatic, counter, delta, env_number, quantile};
use inkling_harness::http::HttpServer;
use inkling_harness::{Launch, LspClient, inline_items, vscode_capabilities};
use serde_json::{Value, json};

/// How long the user looks at a file before typing.
const LOOK: Duration = Duration::from_secs(2);

/// What the proxy does in a configuration; `None`: no remote.
struct Config {
    key: &'static str,
    label: &'static str,
    network: Option<Network>,
}

/// Where a keystroke's answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answerer {
    Remote,
    Local,
    /// The typed-through cache: no backend.
    Memory,
    /// No backend: the position wants no suggestion (inside a word, say), or no
    /// backend answered.
    Nowhere,
}

/// One keystroke's request.
struct Keystroke {
    latency: Duration,
    answered: bool,
    from: Answerer,
    /// The second engine was started: local because the remote had no first token
    /// in time (or at once, to measure the remote), or the remote because local had
    /// no answer in time.
    hedged: bool,
    /// The local engine answered after the remote failed (or answered nothing).
    fallback: bool,
    /// Answered from memory with what a prefetch computed.
    prefetched: bool,
    /// How long it could wait on the remote before the local engine started: the
    /// hedge delay when the remote went first, zero when local did.
    remote_wait: Duration,
}

impl Keystroke {
    /// Its latency and how it was answered, in words.
    fn describe(&self) -> String {
        let flags = [
            (!self.answered, "empty"),
            (self.prefetched, "prefetched"),
            (self.hedged, "hedged"),
            (self.fallback, "fallback"),
        ];
        let flags: String = flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| format!(", {name}"))
            .collect();
        format!(
            "{} ms ({:?}{flags}; waits on the remote up to {} ms)",
            self.latency.as_millis(),
            self.from,
            self.remote_wait.as_millis()
        )
    }
}

/// A configuration's run.
struct Run {
    keystrokes: Vec<Keystroke>,
    /// `backends` of `inkling/stats` at the end.
    backends: Value,
    proxy: Option<Counts>,
}

fn hedge_delay(backends: &Value) -> Duration {
    Duration::from_secs_f64(backends["hedgeDelayMs"].as_f64().unwrap_or(0.0) / 1000.0)
}

/// How long a request may wait on the remote before the local engine starts.
fn remote_wait(backends: &Value) -> Duration {
    match backends["firstLeg"].as_str() {
        Some("remote") => hedge_delay(backends),
        _ => Duration::ZERO,
    }
}

/// The `--threads` flag for every engine, if any.
fn thread_flags() -> Vec<String> {
    match env_number("INKLING_BENCH_THREADS", 1) {
        0 => Vec::new(),
        n => vec!["--threads".into(), n.to_string()],
    }
}

/// Gives every thread of process `pid` the lowest CPU priority: its work then takes
/// no CPU time the local engine and the client want, as on a machine of its own.
fn lowest_priority(pid: u32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the remote's threads");
    for task in tasks.map_while(Result::ok) {
        let status = std::process::Command::new("renice")
            .args(["-n", "19", "-p"])
            .arg(task.file_name())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("renice");
        assert!(status.success(), "renice failed");
    }
}

fn run(config: &Config, replays: &[Replay], verbose: bool) -> Run {
    let flags = thread_flags();
    // Declared before the client, so dropped after it: the remote outlives its user.
    let remote = config.network.map(|network| {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = HttpServer::start_with(&flags, &[]);
        if env_number("INKLING_BENCH_REMOTE_NICE", 1) != 0 {
            lowest_priority(server.pid());
        }
        let proxy = Proxy::start(server.address, network);
        (server, proxy)
    });
    let options = match &remote {
        Some((_, proxy)) => json!({"remote": {
            "url": proxy.url(), "preset": "llama-server", "triggers": "all",
        }}),
        None => json!({}),
    };
    let mut client = LspClient::launch(&Launch {
        args: flags.clone(),
        env: Vec::new(),
    });
    client.initialize(vscode_capabilities(), options);
    client.wait_until_ready(Duration::from_secs(600));
    let mut keystrokes = Vec::new();
    for (n, replay) in replays.iter().enumerate() {
        let uri = format!("file:///bench/remote{n}.py");
        client.open(&uri, "python", &replay.opened_text());
        client.focus(&uri, replay.first_line as u32, 0);
        std::thread::sleep(LOOK);
        let mut previous = client.stats();
        replay.type_into(&mut client, &uri, |client, line, column| {
            let (latency, response) = ask_automatic(client, &uri, line, column);
            let stats = client.stats();
            let (now, before) = (&stats["backends"], &previous["backends"]);
            let from = if delta(&stats, &previous, "typedThrough") > 0 {
                Answerer::Memory
            } else if delta(&now["remote"], &before["remote"], "wins") > 0 {
                Answerer::Remote
            } else if delta(&now["local"], &before["local"], "wins") > 0 {
                Answerer::Local
            } else {
                Answerer::Nowhere
            };
            let keystroke = Keystroke {
                latency,
                answered: !inline_items(&response).is_empty(),
                from,
                hedged: delta(now, before, "hedges") > 0,
                fallback: delta(now, before, "fallbacks") > 0,
                prefetched: delta(&stats["prefetch"], &previous["prefetch"], "hits") > 0,
                remote_wait: remote_wait(before),
            };
            if verbose {
                eprintln!("[{}] {line}:{column} {}", config.key, keystroke.describe());
            }
            keystrokes.push(keystroke);
            previous = stats;
        });
    }
    let backends = client.stats()["backends"].clone();
    client.shutdown_and_exit();
    Run {
        keystrokes,
        backends,
        proxy: remote.map(|(_, proxy)| proxy.counts()),
    }
}

/// The numbers of a run.
struct Summary {
    requests: usize,
    answered: usize,
    p50: Duration,
    p95: Duration,
    mean: Duration,
    max: Duration,
    remote: usize,
    local: usize,
    memory: usize,
    /// p50 and p95 of the requests a backend (remote or local) answered.
    served: Option<(Duration, Duration)>,
    hedges: u64,
    fallbacks: u64,
    trips: u64,
}

/// The keystrokes of some runs.
fn all_keystrokes(runs: &[Run]) -> impl Iterator<Item = &Keystroke> {
    runs.iter().flat_map(|run| &run.keystrokes)
}

/// The numbers of some runs of one configuration, pooled.
fn summarize(runs: &[Run]) -> Summary {
    let latency = Latencies::of(all_keystrokes(runs).map(|k| k.latency));
    let count = |from| all_keystrokes(runs).filter(|k| k.from == from).count();
    let total = |name| runs.iter().map(|run| counter(&run.backends, name)).sum();
    let mut served: Vec<Duration> = all_keystrokes(runs)
        .filter(|k| matches!(k.from, Answerer::Remote | Answerer::Local))
        .map(|k| k.latency)
        .collect();
    served.sort();
    Summary {
        requests: all_keystrokes(runs).count(),
        answered: all_keystrokes(runs).filter(|k| k.answered).count(),
        p50: latency.p50,
        p95: latency.p95,
        mean: latency.mean,
        max: latency.max,
        remote: count(Answerer::Remote),
        local: count(Answerer::Local),
        memory: count(Answerer::Memory),
        served: (!served.is_empty()).then(|| (quantile(&served, 0.5), quantile(&served, 0.95))),
        hedges: total("hedges"),
        fallbacks: total("fallbacks"),
        trips: total("breakerTrips"),
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn pct(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn report(config: &Config, pass: usize, run: &Run, s: &Summary) {
    println!("\n[{}, pass {pass}]", config.label);
    println!(
        "  latency per keystroke: p50 {} ms, p95 {} ms, mean {} ms, max {} ms ({} requests; {} answered)",
        ms(s.p50),
        ms(s.p95),
        ms(s.mean),
        ms(s.max),
        s.requests,
        s.answered
    );
    println!(
        "  answers from: remote {} ({:.0}%), local {} ({:.0}%), memory {} ({:.0}%); no backend asked {}",
        s.remote,
        pct(s.remote, s.requests),
        s.local,
        pct(s.local, s.requests),
        s.memory,
        pct(s.memory, s.requests),
        s.requests - s.remote - s.local - s.memory
    );
    if let Some((p50, p95)) = s.served {
        println!(
            "  requests a backend answered ({}): p50 {} ms, p95 {} ms",
            s.remote + s.local,
            ms(p50),
            ms(p95)
        );
    }
    let Some(proxy) = run.proxy else {
        return;
    };
    let b = &run.backends;
    println!(
        "  races local first {}, hedges {}, fallbacks {}, remote failures {}, remote empty answers {}, breaker trips {} ({} requests kept local by it; {} now), at the end {} first with a hedge delay of {} ms",
        b["localFirst"],
        s.hedges,
        s.fallbacks,
        b["remote"]["failures"],
        b["remote"]["empty"],
        s.trips,
        b["skippedByBreaker"],
        b["breaker"].as_str().unwrap_or("-"),
        b["firstLeg"].as_str().unwrap_or("-"),
        ms(hedge_delay(b)),
    );
    println!(
        "  remote time to first token p50 {:.0} ms, p90 {:.0} ms ({} samples, proxy delay included)",
        b["remote"]["firstToken"]["p50Ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        b["remote"]["firstToken"]["p90Ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        b["remote"]["firstToken"]["samples"]
    );
    println!(
        "  the proxy saw {} requests: {} answered 500, {} dropped",
        proxy.requests, proxy.failed_500, proxy.dropped
    );
    let mut slowest: Vec<&Keystroke> = run.keystrokes.iter().collect();
    slowest.sort_by_key(|k| std::cmp::Reverse(k.latency));
    println!(
        "  slowest: {}",
        slowest
            .iter()
            .take(3)
            .map(|k| k.describe())
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// The targets, against local alone: a healthy remote's p95 per keystroke
/// no worse; no request waiting longer than the hedge delay (when the remote went
/// first) plus the local engine's time (local alone's p95 and max over the requests
/// its engine answered).
fn check(local: &Summary, results: &[(&Config, Vec<Run>, Summary)]) {
    let (_, local_p95) = local.served.unwrap_or_default();
    println!(
        "\ntargets (local alone: p95 per keystroke {} ms; of the requests its engine answered p95 {} ms, max {} ms):",
        ms(local.p95),
        ms(local_p95),
        ms(local.max)
    );
    for (config, runs, s) in results {
        let Some(network) = config.network else {
            continue;
        };
        if network.failing_percent == 0 {
            println!(
                "  {}: p95 per keystroke {} ms vs local alone {} ms: {}",
                config.key,
                ms(s.p95),
                ms(local.p95),
                if s.p95 <= local.p95 {
                    "no worse"
                } else {
                    "WORSE"
                }
            );
        }
        let worst = all_keystrokes(runs)
            .max_by_key(|k| k.latency)
            .expect("a keystroke");
        let over = |local_time: Duration| {
            all_keystrokes(runs).filter(move |k| k.latency > k.remote_wait + local_time)
        };
        println!(
            "  {}: worst request {}: its wait on the remote + local p95 = {} ms, + local max = {} ms; requests over the first bound: {}, over the second: {} (of {})",
            config.key,
            worst.describe(),
            ms(worst.remote_wait + local_p95),
            ms(worst.remote_wait + local.max),
            over(local_p95).count(),
            over(local.max).count(),
            s.requests
        );
        for k in over(local.max) {
            println!("    over: {}", k.describe());
        }
    }
}

fn main() {
    let modules = std::env::var("INKLING_BENCH_FILES").unwrap_or_else(|_| "textwrap".into());
    let keystrokes = env_number("INKLING_BENCH_KEYSTROKES", 120);
    let rounds = env_number("INKLING_BENCH_ROUNDS", 2).max(1);
    let wanted = std::env::var("INKLING_BENCH_CONFIGS")
        .unwrap_or_else(|_| "local,remote50,remote300,failing".into());
    let verbose = std::env::var_os("INKLING_BENCH_VERBOSE").is_some();
    let replays: Vec<Replay> = modules
        .split(',')
        .map(|m| Replay::of(m.trim(), keystrokes))
        .collect();
    let healthy = |ms| Network {
        delay: Duration::from_millis(ms),
        failing_percent: 0,
        seed: 0,
    };
    let configs = [
        Config {
            key: "local",
            label: "local only",
            network: None,
        },
        Config {
            key: "remote50",
            label: "remote inkling, 50 ms round trip",
            network: Some(healthy(50)),
        },
        Config {
            key: "remote300",
            label: "remote inkling, 300 ms round trip",
            network: Some(healthy(300)),
        },
        Config {
            key: "failing",
            label: "remote inkling, 50 ms round trip, 20% of requests failed",
            network: Some(Network {
                failing_percent: 20,
                seed: 15,
                ..healthy(50)
            }),
        },
    ];
    let threads = match env_number("INKLING_BENCH_THREADS", 1) {
        0 => "all cores".to_owned(),
        n => format!("--threads {n}"),
    };
    println!(
        "remote engines while typing: {} ({keystrokes} keystrokes each), automatic requests, one at a time; every engine {threads}, local and remote on this machine's {} cores; {rounds} passes over the configurations, each pass in the reverse order of the one before, pooled in the targets and the table",
        Replay::names(&replays),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let chosen: Vec<&Config> = configs
        .iter()
        .filter(|c| wanted.split(',').any(|w| w.trim() == c.key))
        .collect();
    // Passes alternate the order (A B C D, then D C B A, ...): a machine that drifts
    // (it does, by tens of ms in p95 over a few minutes) favours no configuration.
    let mut runs: Vec<Vec<Run>> = chosen.iter().map(|_| Vec::new()).collect();
    for pass in 0..rounds {
        let mut order: Vec<usize> = (0..chosen.len()).collect();
        if pass % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let run = run(chosen[i], &replays, verbose);
            report(
                chosen[i],
                pass + 1,
                &run,
                &summarize(std::slice::from_ref(&run)),
            );
            runs[i].push(run);
        }
    }
    let results: Vec<(&Config, Vec<Run>, Summary)> = chosen
        .into_iter()
        .zip(runs)
        .map(|(config, runs)| {
            let summary = summarize(&runs);
            (config, runs, summary)
        })
        .collect();
    if let Some((_, _, local)) = results.iter().find(|(c, _, _)| c.network.is_none()) {
        check(local, &results);
    }
    println!(
        "\n{:<10} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "config",
        "reqs",
        "p50",
        "p95",
        "mean",
        "max",
        "remote",
        "local",
        "memory",
        "hedges",
        "fallbk",
        "trips"
    );
    for (config, _, s) in &results {
        println!(
            "{:<10} {:>5} {:>6} {:>6} {:>6} {:>6} {:>5.0}% {:>5.0}% {:>5.0}% {:>6} {:>6} {:>6}",
            config.key,
            s.requests,
            ms(s.p50),
            ms(s.p95),
            ms(s.mean),
            ms(s.max),
            pct(s.remote, s.requests),
            pct(s.local, s.requests),
            pct(s.memory, s.requests),
            s.hedges,
            s.fallbacks,
            s.trips
        );
    }
    println!("(latencies in ms; remote/local/memory: shares of the requests' answers)");
}
