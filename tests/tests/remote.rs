//! End-to-end tests of remote engines: the real binary as the language server, a
//! second real `inkling http` as the remote engine (streaming `/infill` and
//! `/v1/completions`), and the harness's fault-injecting server for remotes that
//! stall, die, send garbage or fail.

use std::time::{Duration, Instant};

use inkling_harness::fault::{Fault, FaultServer};
use inkling_harness::http::HttpServer;
use inkling_harness::{LspClient, first_text, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const URI: &str = "file:///project/src/fib.py";
const TEXT: &str = "def fibonacci(n):\n    if n < 2:\n        return n\n    return \n";
/// After `    return ` on line 3.
const LINE: u32 = 3;
const CHARACTER: u32 = 11;

/// A language server whose `remote` option is `remote`, with the document open.
fn server_with(remote: Value) -> LspClient {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), json!({ "remote": remote }));
    client.wait_until_ready(Duration::from_secs(120));
    client.open(URI, "python", TEXT);
    client
}

fn backends(client: &mut LspClient) -> Value {
    client.stats()["backends"].clone()
}

#[test]
fn a_remote_inkling_answers_invoked_requests_over_both_streamed_formats() {
    // No prompt time limit: the remote's first, cold prompt is decoded whole.
    let remote = HttpServer::start_with(&["--prompt-time-limit-ms", "0"], &[]);
    let url = format!("http://{}", remote.address);
    // Generous timeouts: a cold prompt on a busy 2-core machine takes seconds.
    let mut client = server_with(json!({
        "url": url, "preset": "llama-server",
        "hedgeDelayMs": 30000, "firstTokenTimeoutMs": 30000, "totalTimeoutMs": 40000,
    }));
    let answer = client.inline_completion(URI, LINE, CHARACTER);
    let text = first_text(&answer);
    assert!(!text.trim().is_empty(), "{answer}");
    // Post-processed like a local answer: one statement, not the rest of a file.
    assert!(!text.contains("def "), "{text:?}");
    let stats = backends(&mut client);
    assert_eq!(stats["remote"]["wins"], 1, "{stats}");
    assert_eq!(stats["local"]["requests"], 0, "{stats}");
    assert_eq!(stats["lastAnswerFrom"], "remote", "{stats}");
    assert_eq!(stats["remoteUrl"], format!("{url}/infill"));

    // The same through `/v1/completions` with `suffix` (settings changed live), at
    // another position so the typed-through cache does not answer.
    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"remote": {
            "url": url, "format": "openai",
            "hedgeDelayMs": 30000, "firstTokenTimeoutMs": 30000, "totalTimeoutMs": 40000,
        }}}),
    );
    let other = "file:///project/src/add.py";
    client.open(other, "python", "def add(a, b):\n    return \n");
    let answer = client.inline_completion(other, 1, 11);
    assert!(answer.get("error").is_none(), "{answer}");
    let stats = backends(&mut client);
    assert_eq!(stats["remoteUrl"], format!("{url}/v1/completions"));
    // Its stream was read whole: an answer (used, or empty and left to local), no failure.
    let remote = &stats["remote"];
    assert_eq!(
        (remote["requests"].as_u64(), remote["failures"].as_u64()),
        (Some(2), Some(0)),
        "{stats}"
    );
    assert_eq!(
        remote["wins"].as_u64().unwrap() + remote["empty"].as_u64().unwrap(),
        2,
        "{stats}"
    );

    // Automatic requests stay local by default.
    let id = client.send_inline_completion_triggered(URI, 0, 17, 2);
    client.response(id, Duration::from_secs(60));
    let stats = backends(&mut client);
    assert_eq!(stats["keptLocal"], 1, "{stats}");
    assert_eq!(stats["remote"]["requests"], 2, "{stats}");
}

#[test]
fn the_deny_list_keeps_a_file_local() {
    let remote = FaultServer::start(Fault::Answer {
        delay: Duration::ZERO,
        text: "fibonacci(n - 1) + fibonacci(n - 2)".into(),
    });
    let mut client = server_with(json!({
        "url": remote.url(), "triggers": "all", "denyPaths": ["**/src/fib.py"],
    }));
    let answer = client.inline_completion(URI, LINE, CHARACTER);
    assert!(!first_text(&answer).trim().is_empty(), "{answer}");
    assert_eq!(remote.requests(), 0, "the remote saw a request");
    let stats = backends(&mut client);
    assert_eq!(
        (stats["denied"].as_u64(), stats["lastAnswerFrom"].as_str()),
        (Some(1), Some("local")),
        "{stats}"
    );
}

#[test]
fn a_remote_that_refuses_the_configuration_is_named_once_and_requests_stay_local() {
    // As vLLM answers a `suffix` it does not take.
    let remote = FaultServer::start(Fault::Status(400));
    let mut client = server_with(json!({"url": remote.url(), "hedgeDelayMs": 10000}));
    let answer = client.inline_completion(URI, LINE, CHARACTER);
    assert!(!first_text(&answer).trim().is_empty(), "{answer}");
    let message = client.wait_for(Duration::from_secs(10), |m| {
        m["method"] == "window/showMessage"
    });
    let text = message["params"]["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(&remote.url()) && text.contains("400"),
        "{message}"
    );
    // Not asked again.
    client.open(
        "file:///project/src/add.py",
        "python",
        "def add(a, b):\n    return \n",
    );
    let answer = client.inline_completion("file:///project/src/add.py", 1, 11);
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(remote.requests(), 1);
    let stats = backends(&mut client);
    assert_eq!(stats["misconfigured"], true, "{stats}");
}

#[test]
fn a_local_model_that_fails_to_load_leaves_the_remote_answering() {
    let remote = FaultServer::start(Fault::Answer {
        delay: Duration::ZERO,
        text: "fibonacci(n - 1) + fibonacci(n - 2)".into(),
    });
    let mut client = LspClient::start();
    client.initialize(
        vscode_capabilities(),
        json!({"model": "/nonexistent/model.gguf", "remote": {"url": remote.url()}}),
    );
    client.wait_for(Duration::from_secs(60), |m| {
        m["method"] == "window/showMessage" && m["params"]["type"] == 1
    });
    client.open(URI, "python", TEXT);
    let answer = client.inline_completion(URI, LINE, CHARACTER);
    assert!(first_text(&answer).contains("fibonacci(n - 1)"), "{answer}");
    assert_eq!(remote.requests(), 1);
    let stats = client.stats();
    assert_eq!(stats["modelState"], "failed", "{stats}");
}

#[test]
fn inkling_status_says_where_the_last_answer_came_from() {
    let remote = FaultServer::start(Fault::Answer {
        delay: Duration::ZERO,
        text: "fibonacci(n - 1) + fibonacci(n - 2)".into(),
    });
    let mut client = server_with(json!({"url": remote.url(), "hedgeDelayMs": 10000}));
    let from = |source: &'static str| {
        move |m: &Value| m["method"] == "inkling/status" && m["params"]["lastAnswerFrom"] == source
    };
    let answer = client.inline_completion(URI, LINE, CHARACTER);
    assert!(first_text(&answer).contains("fibonacci(n - 1)"), "{answer}");
    let status = client.wait_for(Duration::from_secs(5), from("remote"));
    // The model's state comes with it, so a client can show both.
    assert_eq!(status["params"]["state"], "ready", "{status}");

    // The remote fails: the local engine answers, and the status says so.
    remote.set(Fault::Status(500));
    let other = "file:///project/src/add.py";
    client.open(other, "python", "def add(a, b):\n    return \n");
    let answer = client.inline_completion(other, 1, 11);
    assert!(!first_text(&answer).trim().is_empty(), "{answer}");
    client.wait_for(Duration::from_secs(5), from("local"));
    assert_eq!(backends(&mut client)["fallbacks"], 1);
}

#[test]
fn a_stalled_remote_loses_to_local_within_the_hedge_delay() {
    let remote = FaultServer::start(Fault::Stall);
    // The first-token timeout is longer than the local engine can take: only the
    // hedge delay can have started it.
    let mut client = server_with(json!({
        "url": remote.url(), "hedgeDelayMs": 200, "firstTokenTimeoutMs": 25000,
    }));
    let started = Instant::now();
    let answer = client.inline_completion(URI, LINE, CHARACTER);
    let took = started.elapsed();
    assert!(!first_text(&answer).trim().is_empty(), "{answer}");
    // The hedge delay plus the local engine's time, not the remote's 30 s stall.
    assert!(took < Duration::from_secs(20), "{took:?}");
    let stats = backends(&mut client);
    assert_eq!(
        (stats["hedges"].as_u64(), stats["lastAnswerFrom"].as_str()),
        (Some(1), Some("local")),
        "{stats}"
    );
    assert_eq!(remote.requests(), 1);
}

#[test]
fn under_the_default_hedge_a_stalled_remote_costs_nothing_and_soon_goes_second() {
    let remote = FaultServer::start(Fault::Stall);
    // No hedge delay set: adapted. The first-token timeout is longer than the local
    // engine can take, so only the hedge can start local.
    let mut client = server_with(json!({"url": remote.url(), "firstTokenTimeoutMs": 25000}));
    let asked = 7;
    for n in 0..asked {
        // Another file each time, so that no answer comes from memory.
        let uri = format!("file:///project/src/f{n}.py");
        let text = TEXT.replace("fibonacci", &format!("fibonacci_{n}"));
        client.open(&uri, "python", &text);
        let started = Instant::now();
        let answer = client.inline_completion(&uri, LINE, CHARACTER);
        let took = started.elapsed();
        // Answered (by the model's judgement, maybe with nothing to suggest) in
        // local's time, not the stall's.
        assert!(answer.get("error").is_none(), "{answer}");
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    let stats = backends(&mut client);
    // Unmeasured, the remote raced local at once (5 times); what it had is its time to
    // a whole answer at least, no shorter than local's: the next race went local
    // first. (Later ones may race both again while a cold prompt makes local's
    // median longer than the stall's samples so far.)
    assert!(stats["localFirst"].as_u64() >= Some(1), "{stats}");
    assert_eq!(stats["remote"]["failures"], 0, "{stats}");
    assert_eq!(stats["local"]["wins"], asked, "{stats}");
    assert!(remote.requests() >= 5, "{}", remote.requests());
}

#[test]
fn a_remote_dying_mid_stream_falls_back_to_local() {
    let remote = FaultServer::start(Fault::DieMidStream);
    let mut client = server_with(json!({"url": remote.url(), "hedgeDelayMs": 10000}));
    let answer = client.inline_completion(URI, LINE, CHARACTER);
    let text = first_text(&answer);
    assert!(
        !text.trim().is_empty() && !text.starts_with("partial"),
        "{answer}"
    );
    let stats = backends(&mut client);
    assert_eq!(
        (
            stats["fallbacks"].as_u64(),
            stats["remote"]["failures"].as_u64()
        ),
        (Some(1), Some(1)),
        "{stats}"
    );
}

#[test]
fn faults_trip_the_breaker_until_a_half_open_probe_succeeds() {
    let remote = FaultServer::start(Fault::Garbage);
    let mut client = server_with(json!({
        "url": remote.url(), "hedgeDelayMs": 10000, "breakerFailures": 3, "breakerOpenMs": 2000,
    }));
    // Three positions at line ends, so that no answer comes from the typed-through cache.
    let positions = [(LINE, CHARACTER), (2, 16), (1, 13)];
    for (fault, (line, character)) in [Fault::Garbage, Fault::Truncated, Fault::Status(500)]
        .into_iter()
        .zip(positions)
    {
        remote.set(fault.clone());
        let answer = client.inline_completion(URI, line, character);
        assert!(answer.get("error").is_none(), "{fault:?}: {answer}");
    }
    let stats = backends(&mut client);
    assert_eq!(
        (stats["breaker"].as_str(), stats["breakerTrips"].as_u64()),
        (Some("open"), Some(1)),
        "{stats}"
    );
    assert_eq!(stats["fallbacks"], 3, "{stats}");
    // Open: the remote is not asked.
    remote.set(Fault::Answer {
        delay: Duration::ZERO,
        text: "fibonacci(n - 1) + fibonacci(n - 2)".into(),
    });
    // (Counted from here: a fault before its first byte may have cost one reconnect.)
    let asked = remote.requests();
    client.replace(URI, 2, &TEXT.replace("return \n", "return  \n"));
    client.inline_completion(URI, LINE, CHARACTER + 1);
    assert_eq!(remote.requests(), asked);
    assert_eq!(backends(&mut client)["skippedByBreaker"], 1);
    // Half-open after the configured time: the probe succeeds and closes it (in text
    // no earlier answer was for).
    std::thread::sleep(Duration::from_millis(2100));
    client.replace(URI, 3, &format!("# probe\n{TEXT}"));
    let answer = client.inline_completion(URI, LINE + 1, CHARACTER);
    assert_eq!(
        first_text(&answer),
        "fibonacci(n - 1) + fibonacci(n - 2)",
        "{answer}"
    );
    let stats = backends(&mut client);
    assert_eq!(
        (stats["breaker"].as_str(), stats["lastAnswerFrom"].as_str()),
        (Some("closed"), Some("remote")),
        "{stats}"
    );
    assert_eq!(remote.requests(), asked + 1);
}

#[test]
fn a_remote_answer_for_a_superseded_keystroke_is_dropped() {
    let remote = FaultServer::start(Fault::Answer {
        delay: Duration::from_millis(800),
        text: "STALE".into(),
    });
    let mut client = server_with(json!({"url": remote.url(), "hedgeDelayMs": 10000}));
    let stale = client.send_inline_completion(URI, LINE, CHARACTER);
    std::thread::sleep(Duration::from_millis(200));
    remote.set(Fault::Answer {
        delay: Duration::ZERO,
        text: "ibonacci(n - 1)".into(),
    });
    client.edit(URI, 2, (LINE, CHARACTER), (LINE, CHARACTER), "f");
    let fresh = client.send_inline_completion(URI, LINE, CHARACTER + 1);
    let stale = client.response(stale, Duration::from_secs(30));
    assert!(inline_items(&stale).is_empty(), "{stale}");
    let fresh = client.response(fresh, Duration::from_secs(30));
    assert!(first_text(&fresh).contains("ibonacci(n - 1)"), "{fresh}");
    let stats = backends(&mut client);
    assert_eq!(stats["remote"]["wins"], 1, "{stats}");
}
