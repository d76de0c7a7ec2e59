//! Several candidates, end to end: the real binary and the default model. An invoked
//! request offers several distinct items where the model has real alternatives;
//! an automatic one at the same position offers one.

use std::time::Duration;

use inkling_harness::{LspClient, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The items' texts at `line`:`character` of `text`, asked with `trigger_kind` (1
/// invoked, 2 automatic) from a server started with `options`.
fn texts(options: Value, text: &str, line: u32, character: u32, trigger_kind: u32) -> Vec<String> {
    let mut client = LspClient::start();
    client.initialize(vscode_capabilities(), options);
    client.wait_until_ready(LOAD_TIMEOUT);
    let uri = "file:///w/stats.py";
    client.open(uri, "python", text);
    // The prompt is decoded whole for both kinds: automatic requests get no prompt
    // time limit here, so that the test is about candidates, not the machine's speed.
    let id = client.send_inline_completion_triggered(uri, line, character, trigger_kind);
    let response = client.response(id, ANSWER_TIMEOUT);
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
    inline_items(&response)
        .iter()
        .map(|item| item["insertText"].as_str().unwrap().to_owned())
        .collect()
}

const TEXT: &str = "def mean(values):\n    total = sum(values)\n    return \n";

#[test]
fn an_invoked_request_offers_several_distinct_candidates_and_an_automatic_one_one() {
    // The automatic answer whole, where the model may be unsure of its rest (see
    // `stopWhenUnsure`): this is about candidates.
    let options = json!({
        "promptTimeLimitMs": 0,
        "generationTimeLimitMs": 3000,
        "suffixRescoring": true,
        "stopWhenUnsure": false,
    });
    let invoked = texts(options.clone(), TEXT, 2, 11, 1);
    assert!(invoked.len() > 1, "one candidate only: {invoked:?}");
    assert!(invoked.len() <= 3, "{invoked:?}");
    for (i, text) in invoked.iter().enumerate() {
        assert!(!text.trim().is_empty(), "{invoked:?}");
        assert!(
            invoked[..i].iter().all(|t| t.trim_end() != text.trim_end()),
            "repeated: {invoked:?}"
        );
    }
    let automatic = texts(options.clone(), TEXT, 2, 11, 2);
    assert_eq!(automatic.len(), 1, "{automatic:?}");

    // One candidate asked for: one item, the greedy answer, which the automatic
    // request (greedy too) also gives.
    let single = texts(
        json!({"promptTimeLimitMs": 0, "generationTimeLimitMs": 3000, "candidates": 1}),
        TEXT,
        2,
        11,
        1,
    );
    assert_eq!(single.len(), 1, "{single:?}");
    assert_eq!(single, automatic);
}

/// A blank line in a function body, the cursor at its indentation.
const INDENTED: &str = "def scale(values, factor):\n    result = []\n    for v in values:\n        \n    return result\n";

#[test]
fn at_the_indentation_the_candidates_differ_in_code_not_in_indentation() {
    let options = json!({"promptTimeLimitMs": 0, "generationTimeLimitMs": 3000});
    let invoked = texts(options, INDENTED, 3, 8, 1);
    assert!(invoked.len() > 1, "one candidate only: {invoked:?}");
    for text in &invoked {
        // More blanks would only re-indent a line, which in Python breaks it.
        assert!(!text.starts_with(char::is_whitespace), "{invoked:?}");
    }
}

/// A blank line above code that uses `out`, which nothing above defines.
const UNBOUND: &str = "def names(paths):\n    \"\"\"The base name of each path.\"\"\"\n    \n    for path in paths:\n        out.append(path.rsplit(\"/\", 1)[-1])\n    return out\n";

/// Whether `text`'s first line assigns `out`.
fn defines_out(text: &str) -> bool {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("out")
        .is_some_and(|rest| rest.trim_start().starts_with('=') && !rest.contains("=="))
}

#[test]
fn a_blank_line_above_a_use_of_an_undefined_name_is_offered_its_definition_first() {
    let options = |on: bool| json!({"promptTimeLimitMs": 0, "generationTimeLimitMs": 3000, "unboundNames": on});
    // Without the names, the model's greedy answer here is something else.
    let off = texts(options(false), UNBOUND, 2, 4, 2);
    assert!(!off.is_empty() && !defines_out(&off[0]), "{off:?}");
    // With them, automatic and invoked requests offer the definition first, one line.
    for trigger_kind in [2, 1] {
        let on = texts(options(true), UNBOUND, 2, 4, trigger_kind);
        let first = on.first().map(String::as_str).unwrap_or_default();
        assert!(defines_out(first), "trigger {trigger_kind}: {on:?}");
        assert!(!first.trim_end().contains('\n'), "{on:?}");
    }
    // On a line the editor left empty, the definition comes indented.
    let empty_line = UNBOUND.replace("\n    \n", "\n\n");
    let on = texts(options(true), &empty_line, 2, 0, 2);
    let first = on.first().map(String::as_str).unwrap_or_default();
    assert!(first.starts_with("    out"), "{on:?}");
    assert!(defines_out(first.trim_start()), "{on:?}");
}

/// A blank line above lines like the one wanted: the shape of `rc`'s value is in
/// plain sight only for a model that reads the code below.
const PARALLEL: &str = "def to_hsv(r, g, b):\n    maxc = max(r, g, b)\n    minc = min(r, g, b)\n    rangec = (maxc-minc)\n    \n    gc = (maxc-g) / rangec\n    bc = (maxc-b) / rangec\n    if r == maxc:\n        return bc-gc\n    return rc-bc\n";

/// Whether `text`'s first line gives `rc` a value shaped like those below it.
fn like_the_lines_below(text: &str) -> bool {
    let line = text.lines().next().unwrap_or_default().trim_end();
    line.starts_with("rc = (maxc-") && line.ends_with(") / rangec")
}

#[test]
fn an_invoked_request_writes_a_names_value_after_reading_the_code_below() {
    // Time enough for every variant on a loaded machine: the test is about the value.
    let options = json!({"promptTimeLimitMs": 0, "generationTimeLimitMs": 10000});
    // An automatic request writes the line where it stands: its value is a guess.
    let automatic = texts(options.clone(), PARALLEL, 4, 4, 2);
    let first = automatic.first().map(String::as_str).unwrap_or_default();
    assert!(first.starts_with("rc ="), "{automatic:?}");
    assert!(!like_the_lines_below(first), "{automatic:?}");
    // An invoked one also writes it after the lines below, and keeps the value after
    // which they are likeliest.
    let invoked = texts(options, PARALLEL, 4, 4, 1);
    let first = invoked.first().map(String::as_str).unwrap_or_default();
    assert!(like_the_lines_below(first), "{invoked:?}");
}

/// A line that opens a block whose body reads `c`, which nothing above defines.
const LOOP: &str = "def depth(paren_string):\n    \"\"\"The deepest nesting of the parentheses.\"\"\"\n    depth = 0\n    deepest = 0\n    \n        if c == '(':\n            depth += 1\n            deepest = max(depth, deepest)\n        elif c == ')':\n            depth -= 1\n    return deepest\n";

#[test]
fn a_line_opening_a_block_that_reads_an_undefined_name_is_offered_a_loop_over_it() {
    let options = |on: bool| json!({"promptTimeLimitMs": 0, "generationTimeLimitMs": 3000, "unboundNames": on});
    let loops_over_c = |text: &str| text.trim_start().starts_with("for c in ");
    let off = texts(options(false), LOOP, 4, 4, 2);
    assert!(!off.first().is_some_and(|t| loops_over_c(t)), "{off:?}");
    for trigger_kind in [2, 1] {
        let on = texts(options(true), LOOP, 4, 4, trigger_kind);
        let first = on.first().map(String::as_str).unwrap_or_default();
        assert!(loops_over_c(first), "trigger {trigger_kind}: {on:?}");
    }
}
