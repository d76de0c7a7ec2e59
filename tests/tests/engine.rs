//! End-to-end tests of the engine's speed features on the real model, through the
//! real binary over LSP: speculative decoding gives the very same answers, warm
//! states and cache shifting keep prompt tokens, the typed-through cache answers
//! without the model, so does the prefetch after accepting a suggestion, time limits
//! end requests, partial answers stream.

use std::time::Duration;

use inkling_harness::{LspClient, first_text, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Python with repetition (as real code has): methods of the same shape.
fn repetitive_python() -> String {
    let mut text = String::from(
        "class Settings:\n    def __init__(self, values):\n        self.values = values\n\n",
    );
    for name in ["width", "height", "depth", "color", "weight"] {
        text.push_str(&format!(
            "    def get_{name}(self):\n        \"\"\"Returns the {name}, or None when it is not set.\"\"\"\n        return self.values.get(\"{name}\", None)\n\n"
        ));
    }
    text
}

fn server_with(options: Value) -> LspClient {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), options);
    client.wait_until_ready(LOAD_TIMEOUT);
    client
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} missing: {stats}"))
}

/// The first suggestion at `line`:`character`, or "" when there is none.
fn first_suggestion(client: &mut LspClient, uri: &str, line: u32, character: u32) -> String {
    first_text(&client.inline_completion(uri, line, character))
}

/// Raw answers (no post-processing, generous limits) at the starts of new methods.
fn raw_answers(options: Value) -> (Vec<String>, Value) {
    let mut options = options;
    let defaults = json!({"postprocess": false, "maxTokens": 48, "generationTimeLimitMs": 600000});
    for (key, value) in defaults.as_object().unwrap() {
        options[key] = value.clone();
    }
    let mut client = server_with(options);
    let base = repetitive_python();
    let mut answers = Vec::new();
    for (n, tail) in ["    def get_", "    def get_shape(self):\n        "]
        .iter()
        .enumerate()
    {
        let uri = format!("file:///w/settings{n}.py");
        let text = format!("{base}{tail}");
        client.open(&uri, "python", &text);
        let line = text.lines().count() as u32 - 1;
        let character = tail.lines().last().unwrap().len() as u32;
        answers.push(first_suggestion(&mut client, &uri, line, character));
    }
    (answers, client.stats())
}

/// The first line of each answer: what a single-line suggestion shows.
fn first_lines(answers: &[String]) -> Vec<&str> {
    answers
        .iter()
        .map(|a| a.lines().next().unwrap_or(""))
        .collect()
}

/// Speculation keeps greedy choices: a draft is accepted only where the model's own
/// argmax agrees by a clear margin. It is NOT bit-identical to plain decoding over
/// long answers: batched verification rounds differently from one-token decodes,
/// which can flip a near tie many tokens later (see ARCHITECTURE.md). This test
/// holds what is guaranteed in practice and checks both drafters really ran.
#[test]
fn speculative_decoding_keeps_the_answers_of_plain_decoding() {
    let (plain, plain_stats) = raw_answers(json!({"promptLookup": false}));
    assert!(plain.iter().all(|a| !a.is_empty()), "{plain:?}");
    assert_eq!(counter(&plain_stats, "draftedTokens"), 0, "{plain_stats}");

    let (lookup, stats) = raw_answers(json!({"promptLookup": true}));
    assert_eq!(
        first_lines(&lookup),
        first_lines(&plain),
        "{lookup:?} vs {plain:?}"
    );
    assert!(counter(&stats, "acceptedTokens") > 0, "{stats}");
    assert!(
        counter(&stats, "acceptedTokens") <= counter(&stats, "draftedTokens"),
        "{stats}"
    );

    // The default model as its own draft model: drafts are the model's own greedy
    // choices, so most are accepted (not all: close calls are decided alone, and
    // drafts run past the end of the answer).
    let model = inkling_harness::default_model_path();
    let (drafted, stats) = raw_answers(json!({"draftModel": model}));
    assert_eq!(
        first_lines(&drafted),
        first_lines(&plain),
        "{drafted:?} vs {plain:?}"
    );
    let accepted = counter(&stats, "acceptedTokens");
    assert!(accepted * 2 > counter(&stats, "draftedTokens"), "{stats}");
}

#[test]
fn switching_documents_restores_their_warm_caches() {
    let mut client = server_with(Value::Null);
    let a = repetitive_python();
    let b = "use std::collections::HashMap;\n\n/// Counts words.\nfn count(text: &str) -> HashMap<&str, usize> {\n    let mut counts = HashMap::new();\n    for word in text.split_whitespace() {\n        ";
    client.open("file:///w/a.py", "python", &format!("{a}    def get_"));
    client.open("file:///w/b.rs", "rust", b);
    let a_line = a.lines().count() as u32;
    let answer = first_suggestion(&mut client, "file:///w/a.py", a_line, 12);
    first_suggestion(&mut client, "file:///w/b.rs", 6, 8);
    // Type a character the suggestion does not start with, so the typed-through
    // cache cannot answer and the engine must.
    let typed = if answer.starts_with('q') { "z" } else { "q" };
    client.edit("file:///w/a.py", 2, (a_line, 12), (a_line, 12), typed);
    let before = client.stats();
    first_suggestion(&mut client, "file:///w/a.py", a_line, 13);
    let after = client.stats();
    assert_eq!(
        counter(&after, "warmRestores"),
        counter(&before, "warmRestores") + 1,
        "{after}"
    );
    let evaluated =
        counter(&after, "promptTokensEvaluated") - counter(&before, "promptTokensEvaluated");
    assert!(
        evaluated <= 3,
        "{evaluated} prompt tokens evaluated after switching back"
    );
}

#[test]
fn a_deletion_above_the_cursor_shifts_the_cache_instead_of_recomputing_it() {
    let mut client = server_with(Value::Null);
    let text = format!("{}    def get_", repetitive_python());
    let line = text.lines().count() as u32 - 1;
    client.open("file:///w/s.py", "python", &text);
    first_suggestion(&mut client, "file:///w/s.py", line, 12);
    let before = client.stats();
    // Text deleted near the top: every token after it moves down a few positions.
    // (Only deletions shift: llama.cpp requires new tokens to follow the cached ones,
    // so text inserted above the cursor is decoded again from the insertion on.)
    client.edit("file:///w/s.py", 2, (1, 21), (1, 29), "");
    first_suggestion(&mut client, "file:///w/s.py", line, 12);
    let after = client.stats();
    let shifted = counter(&after, "promptTokensShifted") - counter(&before, "promptTokensShifted");
    let evaluated =
        counter(&after, "promptTokensEvaluated") - counter(&before, "promptTokensEvaluated");
    assert!(shifted > 100, "{shifted} tokens shifted: {after}");
    assert!(evaluated < 20, "{evaluated} tokens evaluated: {after}");
}

#[test]
fn typing_the_suggestion_is_answered_from_memory() {
    let mut client = server_with(Value::Null);
    let text = "def mean(values):\n    total = sum(values)\n    return ";
    client.open("file:///w/mean.py", "python", text);
    let answer = first_suggestion(&mut client, "file:///w/mean.py", 2, 11);
    assert!(answer.chars().count() >= 2, "{answer:?}");
    let before = client.stats();
    let typed = answer.chars().next().unwrap();
    client.edit("file:///w/mean.py", 2, (2, 11), (2, 11), &typed.to_string());
    let rest = first_suggestion(&mut client, "file:///w/mean.py", 2, 12);
    assert_eq!(rest, answer[typed.len_utf8()..]);
    assert_answered_from_memory(&before, &client.stats());
}

/// Between the `before` and `after` stats, one request was answered from the
/// typed-through cache and the model generated nothing.
fn assert_answered_from_memory(before: &Value, after: &Value) {
    assert_eq!(
        counter(after, "typedThrough"),
        counter(before, "typedThrough") + 1
    );
    assert_eq!(
        counter(after, "generatedTokens"),
        counter(before, "generatedTokens"),
        "the model was used: {after}"
    );
}

/// Polls `inkling/stats` until `done` holds of it.
fn stats_when(client: &mut LspClient, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let stats = client.stats();
        if done(&stats) || std::time::Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn accepting_a_suggestion_and_asking_again_is_answered_from_the_prefetch() {
    let mut client = server_with(Value::Null);
    let text = format!("{}    def get_", repetitive_python());
    let line = text.lines().count() as u32 - 1;
    client.open("file:///w/s.py", "python", &text);
    let answer = first_suggestion(&mut client, "file:///w/s.py", line, 12);
    assert!(!answer.is_empty() && !answer.contains('\n'), "{answer:?}");
    // While the user reads the suggestion, the engine computes what comes after it.
    let stats = stats_when(&mut client, |s| counter(&s["prefetch"], "answers") == 1);
    assert_eq!(counter(&stats["prefetch"], "answers"), 1, "{stats}");

    // Accept: the editor inserts the text and asks at the end of it (automatically,
    // as VS Code and Neovim do after an accept).
    client.edit("file:///w/s.py", 2, (line, 12), (line, 12), &answer);
    let end = 12 + answer.encode_utf16().count() as u32;
    let before = client.stats();
    let next = automatic_suggestion(&mut client, "file:///w/s.py", line, end);
    let after = client.stats();
    assert!(!next.is_empty(), "nothing after accepting {answer:?}");
    assert_eq!(counter(&after["prefetch"], "hits"), 1, "{after}");
    assert_answered_from_memory(&before, &after);

    // It is the answer a server without prefetching gives there (with no prompt time
    // limit: its prompt is cold).
    let mut plain = server_with(json!({"prefetch": false, "promptTimeLimitMs": 0}));
    let accepted = format!("{text}{answer}");
    plain.open("file:///w/s.py", "python", &accepted);
    let fresh = automatic_suggestion(&mut plain, "file:///w/s.py", line, end);
    assert_eq!(next, fresh);
    assert_eq!(counter(&plain.stats()["prefetch"], "answers"), 0);
}

/// The first suggestion of an automatic request, or "".
fn automatic_suggestion(client: &mut LspClient, uri: &str, line: u32, character: u32) -> String {
    let id = client.send_inline_completion_triggered(uri, line, character, 2);
    first_text(&client.response(id, ANSWER_TIMEOUT))
}

#[test]
fn the_prompt_time_limit_ends_an_automatic_request_and_the_background_carries_on() {
    let mut client = server_with(json!({"promptTimeLimitMs": 1}));
    let text = format!("{}    def get_", repetitive_python().repeat(3));
    let line = text.lines().count() as u32 - 1;
    client.open("file:///w/long.py", "python", &text);
    // The warm of the document just opened is stopped by the request at once;
    // when it got far enough first, the request's one slice finishes the prompt.
    let id = client.send_inline_completion_triggered("file:///w/long.py", line, 12, 2);
    let response = client.response(id, ANSWER_TIMEOUT);
    if !inline_items(&response).is_empty() {
        let stats = client.stats();
        assert!(
            counter(&stats["prefetch"], "promptTokensEvaluated") > 0,
            "answered in one slice without a warm: {stats}"
        );
        return;
    }
    let cut = client.stats();
    let prompt_tokens = counter(&cut, "promptTokens");
    assert!(
        counter(&cut, "promptTokensEvaluated") < prompt_tokens,
        "the whole prompt fit one slice: {cut}"
    );
    // The prompt it ran out of time on is decoded on in the background…
    let warmed = stats_when(&mut client, |s| counter(&s["prefetch"], "warmed") >= 1);
    assert!(counter(&warmed["prefetch"], "warmed") >= 1, "{warmed}");
    // …so the next keystroke's request finds it cached and is answered.
    let id = client.send_inline_completion_triggered("file:///w/long.py", line, 12, 2);
    let response = client.response(id, ANSWER_TIMEOUT);
    let after = client.stats();
    assert!(!inline_items(&response).is_empty(), "{response}");
    let evaluated =
        counter(&after, "promptTokensEvaluated") - counter(&cut, "promptTokensEvaluated");
    assert!(
        evaluated <= 2,
        "the request decoded {evaluated} prompt tokens: {after}"
    );
}

/// `n` small functions, no two alike: windows far apart in it share no text.
fn distinct_functions(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "def step_{i}(value):\n    return value * {} - {i}\n\n",
                i * 7 % 31
            )
        })
        .collect()
}

#[test]
fn the_cursor_a_client_reports_is_warmed_before_the_first_keystroke() {
    // A slice too short for the whole prompt (~560 tokens: over 2 s here).
    let mut client = server_with(json!({"promptTimeLimitMs": 1500}));
    let uri = "file:///w/far.py";
    // Long enough, and without repetition, so that the window at its end shares
    // nothing with the one at its start, which is what opening the file warms (LSP does
    // not say where the cursor is).
    let text = distinct_functions(120);
    let line = text.matches('\n').count() as u32;
    client.open(uri, "python", &text);
    stats_when(&mut client, |s| counter(&s["prefetch"], "warmed") >= 1);
    client.focus(uri, line, 0);
    stats_when(&mut client, |s| counter(&s["prefetch"], "warmed") >= 2);
    client.edit(uri, 2, (line, 0), (line, 0), "def step_");
    let before = client.stats();
    let suggestion = automatic_suggestion(&mut client, uri, line, 9);
    let after = client.stats();
    let evaluated =
        counter(&after, "promptTokensEvaluated") - counter(&before, "promptTokensEvaluated");
    assert!(
        evaluated <= 16,
        "the first keystroke decoded {evaluated} prompt tokens: {after}"
    );
    assert!(!suggestion.is_empty(), "{after}");
}

#[test]
fn the_answer_where_a_client_reports_the_cursor_is_ready_before_the_first_request() {
    let mut client = server_with(Value::Null);
    let uri = "file:///w/focus.py";
    let text = distinct_functions(30);
    let line = text.matches('\n').count() as u32;
    client.open(uri, "python", &text);
    stats_when(&mut client, |s| counter(&s["prefetch"], "warmed") >= 1);
    client.focus(uri, line, 0);
    let ready = stats_when(&mut client, |s| counter(&s["prefetch"], "answers") >= 1);
    assert_eq!(counter(&ready["prefetch"], "answers"), 1, "{ready}");
    // Neovim asks there on entering Insert mode; a first keystroke types through it.
    let before = client.stats();
    let suggestion = automatic_suggestion(&mut client, uri, line, 0);
    assert!(!suggestion.is_empty());
    assert_answered_from_memory(&before, &client.stats());
}

#[test]
fn a_file_just_opened_is_answered_from_a_short_prompt_until_the_full_one_is_warm() {
    let mut client = server_with(Value::Null);
    let uri = "file:///w/fresh.py";
    // A full prompt of ~1,000 tokens: seconds to decode here; its short prompt ~250.
    let text = distinct_functions(200);
    let line = text.matches('\n').count() as u32;
    client.open(uri, "python", &text);
    // Its first screen is warmed at a guess (nothing in common with its end).
    let opened = stats_when(&mut client, |s| counter(&s["prefetch"], "warmed") >= 1);
    let evaluated = counter(&opened["prefetch"], "promptTokensEvaluated");
    client.focus(uri, line, 0);
    // The short prompt is warmed first: once more than it is decoded, the warm is
    // on the full one, far from done.
    let warming = stats_when(&mut client, |s| {
        counter(&s["prefetch"], "promptTokensEvaluated") >= evaluated + 300
    });
    assert_eq!(counter(&warming["prefetch"], "warmed"), 1, "{warming}");
    client.edit(uri, 2, (line, 0), (line, 0), "def step_");
    let first = automatic_suggestion(&mut client, uri, line, 9);
    let answered = client.stats();
    assert!(
        !first.is_empty(),
        "the first keystroke got nothing: {answered}"
    );
    // A stand-in: its first line, which comes soonest.
    assert!(!first.contains('\n'), "{first:?}");
    assert_eq!(counter(&answered, "shortPrompts"), 1, "{answered}");
    // The full prompt is warmed on in the background (no prefetch stops it); then it
    // answers, decoding only the line typed since.
    stats_when(&mut client, |s| counter(&s["prefetch"], "warmed") >= 2);
    client.edit(uri, 3, (line, 0), (line, 9), "class Step");
    let before = client.stats();
    let second = automatic_suggestion(&mut client, uri, line, 10);
    let after = client.stats();
    assert!(!second.is_empty(), "{after}");
    assert_eq!(counter(&after, "shortPrompts"), 1, "{after}");
    let evaluated =
        counter(&after, "promptTokensEvaluated") - counter(&before, "promptTokensEvaluated");
    assert!(
        evaluated <= 16,
        "decoded {evaluated} prompt tokens: {after}"
    );
}

#[test]
fn partial_answers_stream_to_clients_that_ask() {
    // One candidate: with several, a rescored one may replace the streamed text at the end.
    let mut client =
        server_with(json!({"streamPartial": true, "postprocess": false, "candidates": 1}));
    let text = "def mean(values):\n    total = sum(values)\n    return ";
    client.open("file:///w/mean.py", "python", text);
    let id = client.send_inline_completion("file:///w/mean.py", 2, 11);
    let response = client.response(id, ANSWER_TIMEOUT);
    let answer = inline_items(&response)[0]["insertText"]
        .as_str()
        .unwrap()
        .to_owned();
    // Notifications and responses share the wire but not an order: gather partial
    // texts, in the order they arrived, until one holds the whole answer.
    let mut partials: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    let whole = |p: &Value| {
        p["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(answer.trim_end()))
    };
    while !partials.iter().any(whole) {
        assert!(
            std::time::Instant::now() < deadline,
            "no partial text holds {answer:?}: {partials:?}"
        );
        partials.extend(
            client
                .drain_backlog()
                .into_iter()
                .filter(|m| m["method"] == "inkling/partialCompletion")
                .map(|m| m["params"].clone()),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(partials.len() >= 2, "{partials:?}");
    let texts: Vec<&str> = partials
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.windows(2).all(|w| w[1].starts_with(w[0])),
        "{texts:?}"
    );
    assert!(
        texts.last().unwrap().starts_with(answer.trim_end()),
        "{texts:?} vs {answer:?}"
    );
    assert_eq!(partials[0]["uri"], "file:///w/mean.py");
    assert_eq!(partials[0]["version"], 1);
    assert_eq!(partials[0]["position"], json!({"line": 2, "character": 11}));

    // Clients that did not ask get none.
    let mut plain = server_with(Value::Null);
    plain.open("file:///w/mean.py", "python", text);
    plain.inline_completion("file:///w/mean.py", 2, 11);
    let streamed = plain
        .drain_backlog()
        .into_iter()
        .any(|m| m["method"] == "inkling/partialCompletion");
    assert!(!streamed);
}
