//! What a client, a setting or a network peer sends must not kill the server, nor
//! let its memory grow without bound: the real binary, real LSP over stdio, real
//! sockets, the real default model.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inkling_harness::http::{HttpServer, first_body_line, open_stream, post, slow_prefix};
use inkling_harness::{LspClient, inkling_binary, vscode_capabilities, write_frame};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_frame_with_a_repeated_key_is_refused_and_the_server_keeps_serving() {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), Value::Null);
    client.open("file:///w/kept.py", "python", "x = 1\n");
    let body = br#"{"jsonrpc":"2.0","id":2,"method":"inkling/stats","method":"inkling/stats"}"#;
    let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    frame.extend_from_slice(body);
    client.send_raw(&frame);
    let refused = client.wait_for(ANSWER_TIMEOUT, |m| m["id"] == 2);
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    // Still serving, with the document intact.
    let stats = client.stats();
    assert!(stats["modelState"].is_string(), "{stats}");
    client.wait_until_ready(LOAD_TIMEOUT);
    let prompt = client.prompt("file:///w/kept.py", 1, 0);
    assert!(
        prompt["text"].as_str().unwrap().contains("x = 1"),
        "{prompt}"
    );
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// An edit the server cannot apply, or whose params it cannot read, is named to the
/// user (their copy and the server's now differ); a frame whose length header is
/// written in lower case is read like any other.
#[test]
fn edits_that_cannot_be_applied_are_named_and_headers_are_read_in_any_case() {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), Value::Null);
    let uri = "file:///w/edited.py";
    client.open(uri, "python", "x = 1\n");
    let warned = |client: &mut LspClient, needle: &'static str| {
        client.wait_for(ANSWER_TIMEOUT, |m| {
            m["method"] == "window/showMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains(needle) && t.contains(uri))
        })
    };
    let range = |start: i64, end: i64| json!({"start": {"line": start, "character": 0}, "end": {"line": end, "character": 0}});
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": range(-1, 0), "text": "y"}]}),
    );
    warned(&mut client, "params are not valid");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 3},
               "contentChanges": [{"range": range(1, 0), "text": "y"}]}),
    );
    warned(&mut client, "edit of");
    let body = json!({"jsonrpc": "2.0", "method": "textDocument/didChange",
        "params": {"textDocument": {"uri": uri, "version": 4},
                   "contentChanges": [{"range": range(0, 0), "text": "z = 0\n"}]}})
    .to_string();
    client.send_raw(format!("content-length: {}\r\n\r\n{body}", body.len()).as_bytes());
    client.wait_until_ready(LOAD_TIMEOUT);
    let prompt = client.prompt(uri, 2, 0);
    assert!(
        prompt["text"].as_str().unwrap().contains("z = 0\nx = 1"),
        "{prompt}"
    );
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn requests_without_parameters_accept_an_empty_object() {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), Value::Null);
    // What Neovim's `client:request('inkling/stats', {})` sends.
    let stats = client.request("inkling/stats", json!({}), ANSWER_TIMEOUT);
    assert!(stats["result"]["modelState"].is_string(), "{stats}");
    let stats = client.request("inkling/stats", json!([]), ANSWER_TIMEOUT);
    assert!(stats["result"]["modelState"].is_string(), "{stats}");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn absurd_settings_are_named_in_a_message_and_bounded() {
    let mut client = LspClient::start();
    client.initialize(
        vscode_capabilities(),
        json!({
            "contextSize": 1,
            "threads": 100000,
            "prefixTokens": 4294967295u32,
            "suffixTokens": 4294967295u32,
            "extraTokens": 4294967295u32,
        }),
    );
    client.wait_until_ready(LOAD_TIMEOUT);
    let messages: Vec<String> = client
        .drain_backlog()
        .into_iter()
        .filter(|m| m["method"] == "window/showMessage")
        .map(|m| {
            m["params"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for setting in [
        "contextSize",
        "threads",
        "prefixTokens",
        "suffixTokens",
        "extraTokens",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(&format!("`{setting}`"))),
            "{setting} not named in {messages:?}"
        );
    }
    // The bounded settings serve a completion instead of aborting.
    client.open(
        "file:///w/square.py",
        "python",
        "def square(x):\n    return ",
    );
    let response = client.inline_completion("file:///w/square.py", 1, 11);
    assert!(response.get("error").is_none(), "{response}");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_context_larger_than_the_model_was_trained_on_is_reduced_with_a_message() {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), json!({"contextSize": 1_000_000_000}));
    client.wait_until_ready(LOAD_TIMEOUT);
    let pid = client.pid();
    let warning = client.wait_for(ANSWER_TIMEOUT, |m| {
        m["method"] == "window/showMessage"
            && m["params"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("`contextSize` = 131072 is more than this model"))
    });
    assert_eq!(warning["params"]["type"], 2, "{warning}");
    // The default model was trained on 32k tokens: its cache, not 18 GB.
    assert!(rss_kib(pid) < 2 << 20, "resident {} KiB", rss_kib(pid));
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_server_exits_when_the_client_process_is_gone() {
    let mut parent = Command::new("sleep")
        .arg("0.2")
        .spawn()
        .expect("spawn sleep");
    let parent_pid = parent.id();
    let mut client = LspClient::start();
    let response = client.request(
        "initialize",
        json!({"processId": parent_pid, "capabilities": {}}),
        ANSWER_TIMEOUT,
    );
    assert!(response.get("result").is_some(), "{response}");
    client.notify("initialized", json!({}));
    parent.wait().expect("sleep ends");
    // stdin stays open: only the parent watch can end the server.
    let status = client.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_client_that_stops_reading_cannot_grow_memory_and_is_dropped() {
    let mut child = Command::new(inkling_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inkling");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    // Keep stdout open and never read it.
    let _stdout = child.stdout.take().expect("stdout");
    write_frame(
        &mut stdin,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    // Each invalid frame earns an error reply nobody reads: a million of them once
    // queued 181 MB.
    let writer = std::thread::spawn(move || {
        let frame = b"Content-Length: 9\r\n\r\n{not json";
        for _ in 0..1_000_000 {
            if stdin.write_all(frame).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let during = rss_kib(pid);
    assert!(
        during < before + 32 * 1024,
        "resident memory grew from {before} KiB to {during} KiB"
    );
    // The writer is blocked by back-pressure; the server gives up on the client.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server is still waiting for the client"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    writer.join().unwrap();
}

#[test]
fn error_replies_do_not_echo_oversized_params() {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), Value::Null);
    // `inkling/stats` takes no params: tower-lsp's error quotes them.
    let big = "y".repeat(1 << 20);
    let reply = client.request("inkling/stats", json!({"junk": big}), ANSWER_TIMEOUT);
    assert_eq!(
        reply["error"]["code"],
        -32602,
        "{}",
        &reply.to_string()[..200]
    );
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.len() < 2048, "{} bytes echoed", message.len());
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// More connections to `server` than the endpoint keeps open, each stuck in its
/// headers.
fn stalled_connections(server: &HttpServer) -> Vec<TcpStream> {
    (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(server.address).expect("connect");
            stream
                .write_all(b"POST /infill HTTP/1.1\r\nHost: x\r\n")
                .expect("partial header");
            stream
        })
        .collect()
}

#[test]
fn connections_holding_partial_headers_do_not_lock_out_real_requests() {
    let server = HttpServer::start(&[]);
    let mut stalled = stalled_connections(&server);
    // A real request is answered at once: the connections idle longest are closed
    // to make room for it, not left to their header timeout (5 s). (A warm-up
    // request: answered without the model.)
    let answered = post(
        server.address,
        "/infill",
        r#"{"input_prefix": "", "input_suffix": "", "n_predict": 0}"#,
    );
    assert_eq!(answered.status, 200, "{answered:?}");
    // The oldest were closed; the newest are still open, waiting for their headers.
    let open = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut byte = [0u8; 1];
        // Closed (end of file, or reset) or answered: not held open any more.
        stream.read(&mut byte).is_err_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        })
    };
    assert!(!open(&mut stalled[0]));
    assert!(open(stalled.last_mut().unwrap()));
    drop(stalled);
    // And a completion still works.
    let response = post(
        server.address,
        "/infill",
        r#"{"input_prefix": "def square(x):\n    return ", "input_suffix": "\n", "n_predict": 8}"#,
    );
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn a_request_body_sent_too_slowly_is_refused_in_time() {
    let server = HttpServer::start(&[]);
    let mut stream = TcpStream::connect(server.address).expect("connect");
    // Headers promise 1000 bytes; only a few come.
    stream
        .write_all(
            b"POST /infill HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"input_prefix\"",
        )
        .expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut reply = [0u8; 512];
    let read = stream.read(&mut reply).expect("a reply");
    let reply = String::from_utf8_lossy(&reply[..read]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_streamed_answer_is_not_closed_to_make_room_for_new_connections() {
    // No prompt time limit: the request stays at the engine while its prompt decodes.
    let server = HttpServer::start_with(&["--prompt-time-limit-ms", "0"], &[]);
    let body = json!({"input_prefix": slow_prefix(), "input_suffix": "\n", "n_predict": 64, "stream": true});
    let (status, mut events) = open_stream(server.address, "/infill", &body.to_string());
    assert_eq!(status, 200);
    first_body_line(&mut events);
    // While it streams, the stalled connections close one another, not the stream.
    let stalled = stalled_connections(&server);
    let mut rest = String::new();
    events
        .read_to_string(&mut rest)
        .expect("the rest of the stream");
    // The answer's last event, and the end of the chunked body.
    assert!(rest.contains("\"stop\":true"), "{rest}");
    assert!(rest.ends_with("0\r\n\r\n"), "{rest}");
    drop(stalled);
}

#[test]
fn a_burst_of_automatic_requests_across_documents_leaves_only_the_newest_running() {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), json!({}));
    client.wait_until_ready(LOAD_TIMEOUT);
    let uris: Vec<String> = (0..12).map(|i| format!("file:///burst/f{i}.py")).collect();
    for (i, uri) in uris.iter().enumerate() {
        let text = format!("def area_{i}(width, height):\n    return \n");
        client.open(uri, "python", &text);
    }
    // Sent at once, as a client gone wrong might: each is a fresh document whose
    // prompt takes the engine a while, so each newer one arrives while older ones
    // still wait or run.
    let ids: Vec<i64> = uris
        .iter()
        .map(|uri| client.send_inline_completion_triggered(uri, 1, 11, 2))
        .collect();
    let stats = client.request("inkling/stats", Value::Null, ANSWER_TIMEOUT);
    assert!(stats.get("result").is_some(), "{stats}");
    let responses: Vec<Value> = ids
        .iter()
        .map(|&id| client.response(id, ANSWER_TIMEOUT))
        .collect();
    for response in &responses {
        assert!(response.get("error").is_none(), "{response}");
    }
    // The user types in one place: a newer automatic request, in any document,
    // supersedes the older ones, which end cancelled.
    let cancelled = client.stats()["cancelled"].as_u64().unwrap_or_default();
    assert!(cancelled >= 11, "{cancelled} of 12 cancelled");
}
