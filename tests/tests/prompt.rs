//! End-to-end tests of prompt construction through the real binary and the real
//! default model: what `inkling/prompt` (and `inkling prompt`) show is what the
//! model gets — signatures from other files of the workspace, the enclosing
//! signature of a long function, plain text for languages without a grammar, a
//! stable start while a line is typed — and a huge document does not stall the server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use inkling_harness::{LspClient, inkling_binary, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn server_in(root: Option<&Path>) -> LspClient {
    let mut client = LspClient::start();
    client.initialize_in(root, vscode_capabilities(), json!({}));
    client.wait_until_ready(LOAD_TIMEOUT);
    client
}

fn text_of(prompt: &Value) -> &str {
    prompt["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no prompt: {prompt}"))
}

/// The cursor in `cart.py` is on a call to a function defined in
/// `pricing/tax.py`, which is not open: the background index finds it, and its
/// signature is in the prompt, under its path. The command line shows the same prompt.
#[test]
fn a_function_called_from_another_file_has_its_signature_in_the_prompt() {
    let root = fixture("shop");
    let cart = std::fs::read_to_string(root.join("cart.py")).unwrap();
    let uri = format!("file://{}", root.join("cart.py").display());
    let mut client = server_in(Some(&root));
    client.open(&uri, "python", &cart);
    // The last line, `        return net + tax`, after `return `.
    let (line, column) = (cart.lines().count() as u32 - 1, 15);
    let signature = "def regional_rate(region: str, category: str) -> float:";
    let deadline = Instant::now() + Duration::from_secs(60);
    let prompt = loop {
        let prompt = client.prompt(&uri, line, column);
        if text_of(&prompt).contains(signature) || Instant::now() > deadline {
            break prompt;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = text_of(&prompt);
    assert!(
        text.contains(&format!("# pricing/tax.py\n# {signature}\n")),
        "{text}"
    );
    // Only the signature: not the body, not the other definitions of the file.
    assert!(!text.contains("RATES.get"), "{text}");
    assert_eq!(prompt["template"], "prefix-only");
    assert_eq!(prompt["path"], "cart.py");
    let stats = client.stats();
    assert_eq!(stats["indexedFiles"], 2, "{stats}");

    let output = Command::new(inkling_binary())
        .args([
            "prompt",
            &format!(
                "{}:{}:{}",
                root.join("cart.py").display(),
                line + 1,
                column + 1
            ),
        ])
        .args(["--root", &root.display().to_string()])
        .output()
        .expect("inkling prompt runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), text);
    // A file no editor opens is refused, not read (`/dev/zero` filled memory, a named
    // pipe waited for good; `/dev/null` is the harmless one of them).
    for special in ["/dev/null", "/proc/self/status"] {
        let refused = Command::new(inkling_binary())
            .args(["prompt", &format!("{special}:1:1")])
            .output()
            .expect("inkling prompt runs");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("not a regular file"),
            "{special}: {stderr}"
        );
    }
    client.shutdown_and_exit();
}

/// Deep in a function longer than the window, the prompt still says which
/// function (and which impl) the cursor is in.
#[test]
fn deep_in_a_long_function_the_prompt_holds_its_signature() {
    let mut source = String::from(
        "use std::collections::HashMap;\n\npub struct Ledger {\n    totals: HashMap<String, i64>,\n}\n\nimpl Ledger {\n    pub fn reconcile(&mut self, entries: &[(String, i64)]) -> Result<i64, String> {\n        let mut sum = 0;\n",
    );
    for i in 0..400 {
        source.push_str(&format!("        sum += entries[{i}].1; // entry {i}\n"));
    }
    source.push_str("        \n    }\n}\n");
    let uri = "file:///tmp/inkling-ledger.rs";
    let mut client = server_in(None);
    client.open(uri, "rust", &source);
    let cursor_line = source.lines().count() as u32 - 3;
    let prompt = client.prompt(uri, cursor_line, 8);
    let text = text_of(&prompt);
    // The window starts far below the signature …
    assert!(!text.contains("let mut sum = 0;"), "{text}");
    assert!(!text.contains("// entry 0\n"), "{text}");
    assert!(text.contains("// entry 399\n"), "{text}");
    // … and the outline right before it holds the imports and the enclosing headers.
    let outline = "use std::collections::HashMap;\nimpl Ledger {\n    pub fn reconcile(&mut self, entries: &[(String, i64)]) -> Result<i64, String> {\n";
    assert!(text.starts_with(&format!("<bos>{outline}")), "{text}");
    client.shutdown_and_exit();
}

/// A language without a grammar gets the plain text before the cursor.
#[test]
fn an_unsupported_language_gets_the_plain_prefix() {
    let source = "       IDENTIFICATION DIVISION.\n       PROGRAM-ID. HELLO.\n       PROCEDURE DIVISION.\n           DISPLAY 'HELLO'.\n";
    let uri = "file:///tmp/inkling-hello.cob";
    let mut client = server_in(None);
    client.open(uri, "cobol", source);
    let prompt = client.prompt(uri, 3, 19);
    let healed = prompt["healed"].as_str().unwrap();
    let before_cursor = &source[..source.find("'HELLO'").unwrap()];
    assert_eq!(
        format!("{}{healed}", text_of(&prompt)),
        format!("<bos>{before_cursor}")
    );
    client.shutdown_and_exit();
}

/// Typing a line character by character changes only the tokens of that line:
/// everything before it — the other file's chunk, the outline, the lines above —
/// stays token for token the same, so the model's cache of it stays valid.
#[test]
fn typing_a_line_leaves_the_tokens_before_it_unchanged() {
    let mut client = server_in(None);
    let helper = "def normalise(values):\n    total = sum(values)\n    return [v / total for v in values]\n\ndef clamp(v, low, high):\n    return max(low, min(v, high))\n";
    client.open("file:///tmp/inkling-helpers.py", "python", helper);
    let mut source =
        String::from("import math\n\n\ndef weights(scores):\n    shares = normalise(scores)\n");
    let uri = "file:///tmp/inkling-weights.py";
    client.open(uri, "python", &source);
    let line = "    return [clamp(math.log(s), 0, 1) for s in shares]";
    let line_number = source.lines().count() as u32;
    let mut previous: Option<Value> = None;
    for (n, c) in line.chars().enumerate() {
        client.edit(
            uri,
            n as i32 + 2,
            (line_number, n as u32),
            (line_number, n as u32),
            &c.to_string(),
        );
        source.push(c);
        let prompt = client.prompt(uri, line_number, n as u32 + 1);
        assert!(
            text_of(&prompt).contains("# def clamp(v, low, high):"),
            "{prompt}"
        );
        if let Some(previous) = previous {
            let pieces: Vec<&str> = previous["pieces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            // Tokens up to the last line break come before the cursor line.
            let mut seen = String::new();
            let before_line = pieces
                .iter()
                .position(|piece| {
                    seen.push_str(piece);
                    !text_of(&previous)[..text_of(&previous).rfind('\n').unwrap() + 1]
                        .starts_with(&seen)
                })
                .unwrap_or(pieces.len());
            let old = &previous["tokens"].as_array().unwrap()[..before_line];
            let new = &prompt["tokens"].as_array().unwrap()[..before_line];
            assert_eq!(old, new, "after typing {} characters", n + 1);
            assert!(before_line > 20, "{before_line}");
        }
        previous = Some(prompt);
    }
    client.shutdown_and_exit();
}

/// A 20 MB document is taken in, edited and completed in without stalling the
/// server: parsing is skipped above its bound, the prompt holds only the window,
/// and other documents are served meanwhile.
#[test]
fn a_20_mb_document_does_not_stall_the_server() {
    let mut client = server_in(None);
    let line = "    value = compute(value, 17)  # keep the pipeline warm\n";
    let huge = format!(
        "def run(value):\n{}",
        line.repeat(20 * 1024 * 1024 / line.len())
    );
    assert!(huge.len() >= 20 * 1024 * 1024 - line.len());
    let uri = "file:///tmp/inkling-huge.py";
    client.open(uri, "python", &huge);
    let last = huge.lines().count() as u32;
    client.edit(uri, 2, (last, 0), (last, 0), "    result = ");
    let prompt = client.prompt(uri, last, 13);
    assert!(
        text_of(&prompt).ends_with("    result ="),
        "{}",
        &text_of(&prompt)[text_of(&prompt).len() - 80..]
    );
    assert!(prompt["tokens"].as_array().unwrap().len() < 1200);
    let answer = client.inline_completion(uri, last, 13);
    assert!(answer.get("result").is_some(), "{answer}");
    client.open(
        "file:///tmp/inkling-small.py",
        "python",
        "def add(a, b):\n    return ",
    );
    let small = client.inline_completion("file:///tmp/inkling-small.py", 1, 11);
    assert!(!inline_items(&small).is_empty(), "{small}");
    client.shutdown_and_exit();
}
