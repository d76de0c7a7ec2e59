//! End-to-end tests of the loopback HTTP endpoint: the real binary (`inkling http`,
//! and the language server with `httpPort`), real HTTP over TCP, the real model.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use inkling_harness::http::{
    HttpServer, first_body_line, open_stream, post, post_with, slow_prefix,
};
use inkling_harness::{LspClient, vscode_capabilities};
use serde_json::json;

const PREFIX: &str = "def fibonacci(n):\n    if n < 2:\n        return n\n    return ";
const SUFFIX: &str = "\n\nprint(fibonacci(10))\n";

#[test]
fn v1_completions_answers_a_zed_fim_request_in_the_openai_shape() {
    let server = HttpServer::start(&[]);
    assert_eq!(
        server.address.ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "loopback only"
    );
    // What Zed's `open_ai_compatible_api` provider sends with `prompt_format: qwen`.
    let body = json!({
        "model": "inkling",
        "prompt": format!("<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"),
        "max_tokens": 64,
        "stop": ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"],
    });
    let response = server.post("/v1/completions", &body.to_string());
    assert_eq!(response.status, 200, "{:?}", response.json);
    let json = &response.json;
    assert_eq!(json["object"], "text_completion", "{json}");
    assert!(
        json["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{json}"
    );
    assert!(json["created"].is_u64(), "{json}");
    assert_eq!(json["model"], "inkling");
    let text = json["choices"][0]["text"]
        .as_str()
        .expect("choices[0].text");
    assert!(!text.trim().is_empty(), "empty suggestion: {json}");
    // The FIM markers were taken apart: the model never saw them as text.
    assert!(!text.contains("<|fim"), "{text:?}");
    let usage = &json["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10, "{json}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    // Bad requests get a 4xx with an error object, and the server keeps serving.
    let bad = server.post("/v1/completions", "{\"prompt\": ");
    assert!((400..500).contains(&bad.status), "{bad:?}");
    assert!(bad.json["error"]["message"].is_string(), "{bad:?}");
    let missing = server.post("/v1/completions", "{\"model\": \"x\"}");
    assert!((400..500).contains(&missing.status), "{missing:?}");
    let again = server.post("/v1/completions", &body.to_string());
    assert_eq!(again.status, 200);
    assert_eq!(again.json["choices"][0]["text"].as_str(), Some(text));
}

#[test]
fn infill_answers_llama_vim_requests() {
    let server = HttpServer::start(&[]);
    // llama.vim splits the cursor line off into `prompt`, and asks for flat fields.
    let (input_prefix, line_prefix) = PREFIX.rsplit_once('\n').unwrap();
    let body = json!({
        "input_prefix": format!("{input_prefix}\n"),
        "input_suffix": SUFFIX,
        "input_extra": [{"filename": "util.py", "text": "def helper():\n    pass\n"}],
        "prompt": line_prefix,
        "n_predict": 64,
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": false,
        "cache_prompt": true,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "response_fields": ["content", "timings/prompt_n", "timings/prompt_ms",
            "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
            "timings/predicted_per_second", "truncated", "tokens_cached"],
    });
    let response = server.post("/infill", &body.to_string());
    assert_eq!(response.status, 200, "{:?}", response.json);
    let json = &response.json;
    let content = json["content"].as_str().expect("content");
    assert!(!content.trim().is_empty(), "{json}");
    for key in [
        "timings/prompt_n",
        "timings/predicted_n",
        "timings/predicted_ms",
        "tokens_cached",
    ] {
        assert!(json[key].is_number(), "{key} missing: {json}");
    }
    assert!(
        json.get("timings").is_none(),
        "only the asked fields: {json}"
    );
    assert!(json["timings/predicted_n"].as_u64().unwrap() > 0, "{json}");

    // Asked again after typing its first character, the rest comes from memory
    // (the typed-through cache), in the full shape when no fields are named.
    let mut typed = body.clone();
    let first = content.chars().next().unwrap();
    typed["prompt"] = json!(format!("{line_prefix}{first}"));
    typed.as_object_mut().unwrap().remove("response_fields");
    let again = server.post("/infill", &typed.to_string());
    let rest = &content[first.len_utf8()..];
    assert_eq!(
        again.json["content"].as_str(),
        Some(rest),
        "{:?}",
        again.json
    );
    assert_eq!(again.json["from_memory"], true, "{:?}", again.json);
    assert!(again.json["generation_settings"]["n_ctx"].is_number());

    let bad = server.post("/infill", "{\"input_suffix\": \"\"}");
    assert!((400..500).contains(&bad.status), "{bad:?}");

    // A web page may not use it, even one whose name resolves to 127.0.0.1 (DNS
    // rebinding: the browser's Origin names the page); a page on this machine may.
    let body = body.to_string();
    let from = |origin: &str| {
        let header = format!("Origin: {origin}\r\n");
        post_with(server.address, "/infill", &header, &body)
    };
    let page = from("http://evil.example:8012");
    assert_eq!(page.status, 403, "{page:?}");
    assert!(
        page.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("evil.example")),
        "{page:?}"
    );
    let local = from("http://localhost:5173");
    assert_eq!(local.status, 200, "{local:?}");
    let both = from("http://localhost:5173\r\nOrigin: http://evil.example:8012");
    assert_eq!(both.status, 403, "{both:?}");
}

#[test]
fn the_language_server_serves_http_with_the_same_engine_when_asked() {
    // A free port: bind one, note it, let it go.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), json!({"httpPort": port}));
    client.wait_until_ready(Duration::from_secs(120));
    let before = client.stats()["requests"].as_u64().unwrap();
    let body = json!({"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 32});
    let response = post(
        ([127, 0, 0, 1], port).into(),
        "/v1/completions",
        &body.to_string(),
    );
    assert_eq!(response.status, 200, "{:?}", response.json);
    assert!(response.json["choices"][0]["text"].is_string());
    let stats = client.stats();
    assert_eq!(stats["requests"].as_u64(), Some(before + 1), "{stats}");
    assert!(
        stats["latency"]["samples"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

#[test]
fn a_superseded_request_is_answered_with_an_error_that_says_so() {
    // No prompt time limit: the request stays at the engine while its prompt decodes.
    let server = HttpServer::start_with(&["--prompt-time-limit-ms", "0"], &[]);
    let first = json!({"input_prefix": slow_prefix(), "input_suffix": "\n", "n_predict": 64, "stream": true});
    let (status, mut events) = open_stream(server.address, "/infill", &first.to_string());
    assert_eq!(status, 200);
    // The first request is at the engine (its prompt being decoded) when a second,
    // from another connection, supersedes it.
    first_body_line(&mut events);
    let second = server.post(
        "/infill",
        &json!({"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8}).to_string(),
    );
    assert_eq!(second.status, 200, "{:?}", second.json);
    let mut rest = String::new();
    events
        .read_to_string(&mut rest)
        .expect("the rest of the stream");
    // Not an empty answer that looks like the model's.
    assert!(rest.contains("superseded"), "{rest}");
    assert!(!rest.contains("\"stop\":true"), "{rest}");
}
