//! Accepting suggestions, whole and in part, end to end (the real binary, real LSP
//! over stdio, the real default model): VS Code's partial accept is a `didChange`
//! that inserts the item's next word, and the request after it is answered from the
//! typed-through cache without the model; the reports of suggestions shown, accepted
//! and dismissed (`inkling/didShow`, `inkling/didAccept`, the items' command through
//! `workspace/executeCommand`, `inkling/didDismiss`) are counted in `inkling/stats`,
//! by trigger and by single- or multi-line suggestion; reports about unknown items
//! change nothing.

use std::time::Duration;

use inkling_harness::{LspClient, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A document whose suggestion at the end of its last line is several words long.
const MEAN: &str = "def mean(values):\n    total = sum(values)\n    return ";
const MEAN_URI: &str = "file:///w/mean.py";
const MEAN_CURSOR: (u32, u32) = (2, 11);

/// A server with the default model, initialized with VS Code-like capabilities, and
/// ready; and its capabilities. Its answers do not depend on how busy the machine
/// is: no prompt time limit (so an automatic request on a cold cache answers too)
/// and a generous generation time limit, but a bound on the tokens.
fn ready_server() -> (LspClient, Value) {
    let mut client = LspClient::start();
    let options = json!({"promptTimeLimitMs": 0, "generationTimeLimitMs": 20_000, "maxTokens": 24});
    let result = client.initialize(vscode_capabilities(), options);
    client.wait_until_ready(LOAD_TIMEOUT);
    (client, result["capabilities"].clone())
}

/// VS Code's "Accept Next Word" (`acceptNextWord` with the default word definition):
/// the word `text` starts with, or else what comes before its first word, but no
/// further than the end of its first run of white space.
fn next_word(text: &str) -> &str {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut end = match text.find(is_word) {
        Some(0) => text.find(|c: char| !is_word(c)).unwrap_or(text.len()),
        Some(start) => start,
        None => text.len(),
    };
    if let Some(space) = text.find(char::is_whitespace) {
        let space_end = text[space..]
            .find(|c: char| !c.is_whitespace())
            .map_or(text.len(), |n| space + n);
        end = end.min(space_end);
    }
    &text[..end]
}

/// Where the cursor is after `text` is inserted at `at` (UTF-16 columns).
fn after(at: (u32, u32), text: &str) -> (u32, u32) {
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.last().unwrap().encode_utf16().count() as u32;
    match lines.len() {
        1 => (at.0, at.1 + last),
        n => (at.0 + n as u32 - 1, last),
    }
}

/// Asks at `at` of `uri` with `trigger` (1 invoked, 2 automatic); returns the first
/// item's text and command.
fn ask(client: &mut LspClient, uri: &str, at: (u32, u32), trigger: u32) -> (String, Value) {
    let id = client.send_inline_completion_triggered(uri, at.0, at.1, trigger);
    let response = client.response(id, ANSWER_TIMEOUT);
    let items = inline_items(&response);
    assert!(!items.is_empty(), "no suggestion: {response}");
    let text = items[0]["insertText"].as_str().unwrap().to_owned();
    (text, items[0]["command"].clone())
}

/// An item's identity, from its command.
fn item_id(command: &Value) -> Value {
    assert_eq!(command["command"], "inkling.didAccept", "{command}");
    let id = command["arguments"][0].clone();
    assert!(
        id["answer"].is_u64() && id["item"].is_u64(),
        "not an identity: {command}"
    );
    id
}

/// A suggestion whose first word was accepted the way VS Code does it.
struct WordAccepted {
    /// The suggestion and its command.
    text: String,
    command: Value,
    word: String,
    /// The answer at the cursor after the word, and its command.
    rest: String,
    rest_command: Value,
    /// `inkling/stats` before the word was inserted, and after the answer to it.
    before: Value,
    after: Value,
}

/// Asks for the suggestion at the end of [`MEAN`] (invoked), inserts its first word
/// with one `didChange` as VS Code's Accept Next Word does, and asks again (VS Code
/// does that at once, an automatic request).
fn accept_a_word(client: &mut LspClient) -> WordAccepted {
    client.open(MEAN_URI, "python", MEAN);
    let (text, command) = ask(client, MEAN_URI, MEAN_CURSOR, 1);
    let word = next_word(&text).to_owned();
    assert!(
        !word.is_empty() && word.len() < text.len(),
        "not a suggestion of several words: {text:?}"
    );
    let before = client.stats();
    client.edit(MEAN_URI, 2, MEAN_CURSOR, MEAN_CURSOR, &word);
    let (rest, rest_command) = ask(client, MEAN_URI, after(MEAN_CURSOR, &word), 2);
    let after = client.stats();
    WordAccepted {
        text,
        command,
        word,
        rest,
        rest_command,
        before,
        after,
    }
}

#[test]
fn the_request_after_a_partial_accept_is_answered_from_memory() {
    let (mut client, _) = ready_server();
    let accepted = accept_a_word(&mut client);
    let WordAccepted {
        text, word, rest, ..
    } = &accepted;
    assert_eq!(rest, &text[word.len()..], "word {word:?} of {text:?}");
    println!("accepted {word:?} of {text:?}; the next answer: {rest:?}");
    let count = |stats: &Value, name: &str| stats[name].as_u64().unwrap();
    let (before, after) = (&accepted.before, &accepted.after);
    assert_eq!(
        count(after, "typedThrough"),
        count(before, "typedThrough") + 1,
        "{after}"
    );
    assert_eq!(
        count(after, "generatedTokens"),
        count(before, "generatedTokens"),
        "the model was asked: {after}"
    );
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn reports_are_counted_by_trigger_and_line_kind() {
    let (mut client, capabilities) = ready_server();
    assert_eq!(
        capabilities["executeCommandProvider"]["commands"],
        json!(["inkling.didAccept"])
    );

    // An invoked suggestion, shown, accepted word by word: its first word, then the
    // rest (the same suggestion, shown again) with the rest's command.
    let accepted = accept_a_word(&mut client);
    let id = item_id(&accepted.command);
    let word_chars = accepted.word.chars().count();
    client.notify("inkling/didShow", id.clone());
    let mut partly = id.clone();
    partly["acceptedLength"] = json!(word_chars);
    client.notify("inkling/didAccept", partly);
    let stats = client.stats();
    assert_eq!(stats["acceptance"]["partlyAccepted"], 1, "{stats}");
    assert_eq!(
        stats["acceptance"]["charactersAccepted"], word_chars,
        "{stats}"
    );
    client.notify("inkling/didShow", item_id(&accepted.rest_command));
    let rest_at = after(MEAN_CURSOR, &accepted.word);
    client.edit(MEAN_URI, 3, rest_at, rest_at, &accepted.rest);
    let response = client.execute_command(&accepted.rest_command);
    assert_eq!(response["result"], Value::Null, "{response}");

    // An automatic suggestion elsewhere, shown and dismissed.
    let uri = "file:///w/add.py";
    client.open(uri, "python", "def add(a, b):\n    return ");
    let (dismissed_text, dismissed_command) = ask(&mut client, uri, (1, 11), 2);
    let dismissed = item_id(&dismissed_command);
    client.notify("inkling/didShow", dismissed.clone());
    client.notify("inkling/didDismiss", dismissed);

    // Reports about items the server never gave, or malformed ones, change nothing.
    client.notify(
        "inkling/didAccept",
        json!({"answer": 1u64 << 40, "item": 0}),
    );
    client.notify("inkling/didShow", json!({"answer": "one", "item": -1}));
    client.notify("inkling/didDismiss", json!([]));
    let no_argument = client.request(
        "workspace/executeCommand",
        json!({"command": "inkling.didAccept", "arguments": []}),
        ANSWER_TIMEOUT,
    );
    assert_eq!(no_argument["error"]["code"], -32602, "{no_argument}");
    let unknown = client.request(
        "workspace/executeCommand",
        json!({"command": "inkling.noSuchCommand"}),
        ANSWER_TIMEOUT,
    );
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    let stats = client.stats();
    let acceptance = &stats["acceptance"];
    let chars = accepted.text.chars().count() as u64;
    let counts = |split: &Value| -> [u64; 5] {
        [
            "shown",
            "accepted",
            "partlyAccepted",
            "dismissed",
            "charactersAccepted",
        ]
        .map(|name| split[name].as_u64().unwrap())
    };
    assert_eq!(counts(acceptance), [2, 1, 0, 1, chars], "{stats}");
    assert_eq!(acceptance["acceptanceRate"], 0.5, "{stats}");
    assert_eq!(
        counts(&acceptance["invoked"]),
        [1, 1, 0, 0, chars],
        "{stats}"
    );
    assert_eq!(counts(&acceptance["automatic"]), [1, 0, 0, 1, 0], "{stats}");
    // By line kind: the accepted suggestion and the dismissed one, each in its own.
    let kind = |text: &str| {
        if text.contains('\n') {
            "multiLine"
        } else {
            "singleLine"
        }
    };
    let mut expected = json!({
        "singleLine": {"shown": 0, "accepted": 0, "dismissed": 0},
        "multiLine": {"shown": 0, "accepted": 0, "dismissed": 0},
    });
    for (text, outcome) in [(&accepted.text, "accepted"), (&dismissed_text, "dismissed")] {
        let split = &mut expected[kind(text)];
        split["shown"] = json!(split["shown"].as_u64().unwrap() + 1);
        split[outcome] = json!(1);
    }
    for name in ["singleLine", "multiLine"] {
        for field in ["shown", "accepted", "dismissed"] {
            assert_eq!(
                acceptance[name][field], expected[name][field],
                "{name}.{field}: {stats}"
            );
        }
    }
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}
