//! Settings and files that change while the editor runs, and files whose completions
//! are disabled: the real binary, real LSP over stdio, the real default model.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inkling_harness::http::{HttpServer, post};
use inkling_harness::{LspClient, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A ready server with `options`, and time limits that no load on a shared machine
/// reaches: these tests are about settings, not speed (speed is for the benchmarks).
fn ready_server(capabilities: Value, root: Option<&Path>, options: Value) -> LspClient {
    let mut options = if options.is_null() {
        json!({})
    } else {
        options
    };
    options["promptTimeLimitMs"] = json!(0);
    options["generationTimeLimitMs"] = json!(20_000);
    let mut client = LspClient::start();
    client.initialize_in(root, capabilities, options);
    client.wait_until_ready(LOAD_TIMEOUT);
    client
}

/// `workspace/didChangeConfiguration` with `settings`.
fn change_settings(client: &mut LspClient, settings: Value) {
    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": settings}),
    );
}

/// The foreground counter `name` of `inkling/stats`.
fn counter(client: &mut LspClient, name: &str) -> u64 {
    let stats = client.stats();
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name}: {stats}"))
}

/// Opens a function header and asks for its body (an invoked, multi-line request);
/// returns the suggestions and the tokens the model generated for them.
fn body_of(client: &mut LspClient, uri: &str, header: &str) -> (Vec<Value>, u64) {
    client.open(uri, "python", &format!("{header}\n    "));
    let before = counter(client, "generatedTokens");
    let response = client.inline_completion(uri, 1, 4);
    assert!(response.get("error").is_none(), "{response}");
    let generated = counter(client, "generatedTokens") - before;
    (inline_items(&response), generated)
}

fn text_of(prompt: &Value) -> String {
    let text = prompt["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no prompt: {prompt}"));
    format!("{text}{}", prompt["healed"].as_str().unwrap_or_default())
}

/// A folder of its own under the temporary directory, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Folder {
        let path = std::env::temp_dir().join(format!("inkling-live-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    fn write(&self, relative: &str, text: &str) -> String {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        self.uri(relative)
    }

    fn uri(&self, relative: &str) -> String {
        format!("file://{}", self.0.join(relative).display())
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asks for the prompt at `line`:`character` of `uri` until `wanted` holds of its
/// text (the index changes in the background), or a minute has passed.
fn prompt_until(
    client: &mut LspClient,
    uri: &str,
    (line, character): (u32, u32),
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = text_of(&client.prompt(uri, line, character));
        if wanted(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Options the pipeline reads apply to the next request: `maxTokens` cuts the next
/// answer to one token, invalid settings are named and change nothing, a disabled
/// language gets empty answers without the model, and settings without it bring
/// answers back. Both shapes of settings are taken: nested under `inkling` or not.
#[test]
fn a_changed_pipeline_option_applies_to_the_next_request() {
    let mut client = ready_server(vscode_capabilities(), None, Value::Null);
    let (items, generated) = body_of(&mut client, "file:///w/fib.py", "def fibonacci(n):");
    assert!(!items.is_empty() && generated > 1, "{generated} {items:?}");

    change_settings(&mut client, json!({"inkling": {"maxTokens": 1}}));
    let (_, generated) = body_of(&mut client, "file:///w/fact.py", "def factorial(n):");
    // One token for each first token an invoked request tries (three candidates and
    // two spare, for candidates that come out blank or equal).
    assert!((1..=5).contains(&generated), "{generated}");

    client.drain_backlog();
    change_settings(&mut client, json!({"inkling": {"maxTokens": "lots"}}));
    let warning = client.wait_for(ANSWER_TIMEOUT, |m| m["method"] == "window/showMessage");
    let message = warning["params"]["message"].as_str().unwrap();
    assert!(message.contains("`maxTokens`"), "{message}");
    assert!(message.contains("kept"), "{message}");
    assert_eq!(warning["params"]["type"], 2, "{warning}");
    let (_, generated) = body_of(&mut client, "file:///w/gcd.py", "def gcd(a, b):");
    assert!(
        (1..=5).contains(&generated),
        "the settings in use were not kept: {generated}"
    );

    change_settings(
        &mut client,
        json!({"maxTokens": 1, "disabledLanguages": ["python"]}),
    );
    let requests = counter(&mut client, "requests");
    let (items, generated) = body_of(&mut client, "file:///w/prime.py", "def is_prime(n):");
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(generated, 0);
    assert_eq!(
        counter(&mut client, "requests"),
        requests,
        "the model was asked"
    );
    let completion = client.request(
        "textDocument/completion",
        LspClient::position_params("file:///w/prime.py", 1, 4),
        ANSWER_TIMEOUT,
    );
    assert!(
        completion["result"].is_null()
            || completion["result"]["items"]
                .as_array()
                .is_some_and(Vec::is_empty),
        "{completion}"
    );

    // Settings without them: `maxTokens` and `disabledLanguages` fall back to the defaults.
    change_settings(&mut client, json!({"inkling": {}}));
    let before = counter(&mut client, "generatedTokens");
    let response = client.inline_completion("file:///w/prime.py", 1, 4);
    let generated = counter(&mut client, "generatedTokens") - before;
    assert!(!inline_items(&response).is_empty(), "{response}");
    assert!(counter(&mut client, "requests") > requests);
    assert!(generated > 1, "{generated}");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// A client that sends no settings (`null`, or none at all) is asked for them with
/// `workspace/configuration`, for inkling's section.
#[test]
fn settings_left_out_are_asked_for() {
    let mut capabilities = vscode_capabilities();
    capabilities["workspace"] = json!({"configuration": true});
    let mut client = ready_server(capabilities, None, Value::Null);
    client.answer(
        "workspace/configuration",
        json!([{"disabledLanguages": ["python"]}]),
    );
    client.drain_backlog();
    change_settings(&mut client, Value::Null);
    let asked = client.wait_for(ANSWER_TIMEOUT, |m| m["method"] == "workspace/configuration");
    assert_eq!(
        asked["params"]["items"],
        json!([{"section": "inkling"}]),
        "{asked}"
    );
    // The settings apply once the answer is in, which a request may overtake.
    let uri = "file:///w/fib.py";
    client.open(uri, "python", "def fibonacci(n):\n    ");
    assert!(
        answers_until(&mut client, uri, false),
        "python still answered"
    );

    client.answer("workspace/configuration", json!([null]));
    client.notify("workspace/didChangeConfiguration", json!({}));
    client.wait_for(ANSWER_TIMEOUT, |m| m["method"] == "workspace/configuration");
    assert!(answers_until(&mut client, uri, true), "python not answered");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// Asks for the body at `uri`'s second line until an answer comes (or not, as
/// `answered` says), for at most a minute; returns whether it did.
fn answers_until(client: &mut LspClient, uri: &str, answered: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client.inline_completion(uri, 1, 4);
        assert!(response.get("error").is_none(), "{response}");
        if inline_items(&response).is_empty() != answered {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A change of what the engine needs at load (`contextSize`) loads the model again in
/// the background, reported like the first load; the open documents, edits
/// included, are still there afterwards. Two changes in a row end with the last.
#[test]
fn an_engine_option_change_reloads_the_model_and_documents_survive() {
    let mut client = ready_server(vscode_capabilities(), None, Value::Null);
    let uri = "file:///w/shapes.py";
    client.open(
        uri,
        "python",
        "import math\n\n\ndef circle_area(radius):\n    return ",
    );
    client.edit(uri, 2, (4, 11), (4, 11), "math.pi * ");
    client.drain_backlog();

    change_settings(&mut client, json!({"inkling": {"contextSize": 2048}}));
    // Asked while the model reloads: an answer, not an error.
    let during = client.inline_completion(uri, 4, 21);
    assert!(during.get("error").is_none(), "{during}");
    let status = |state: &'static str| {
        move |m: &Value| m["method"] == "inkling/status" && m["params"]["state"] == state
    };
    client.wait_for(LOAD_TIMEOUT, status("loading"));
    // The first load's own `ready` may still be on its way: the reload's says 2048.
    let ready = client.wait_for(LOAD_TIMEOUT, |m| {
        status("ready")(m)
            && m["params"]["message"]
                .as_str()
                .is_some_and(|t| !t.contains("context 4096 tokens"))
    });
    let message = ready["params"]["message"].as_str().unwrap();
    assert!(message.contains("context 2048 tokens"), "{message}");
    let begun = client.wait_for(LOAD_TIMEOUT, |m| {
        m["method"] == "$/progress" && m["params"]["value"]["kind"] == "begin"
    });
    assert_eq!(begun["params"]["token"], "inkling/model/2", "{begun}");

    let prompt = text_of(&client.prompt(uri, 4, 21));
    assert!(
        prompt.ends_with("def circle_area(radius):\n    return math.pi * "),
        "{prompt}"
    );
    let answer = client.inline_completion(uri, 4, 21);
    assert!(!inline_items(&answer).is_empty(), "{answer}");

    client.drain_backlog();
    change_settings(&mut client, json!({"contextSize": 1024}));
    change_settings(&mut client, json!({"contextSize": 3072}));
    let ready = client.wait_for(LOAD_TIMEOUT, |m| {
        status("ready")(m)
            && m["params"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("context 3072 tokens"))
    });
    assert!(ready["params"]["message"].is_string());
    let answer = client.inline_completion(uri, 4, 21);
    assert!(!inline_items(&answer).is_empty(), "{answer}");
    assert_eq!(client.stats()["modelState"], "ready");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// Settings the model cannot use never leave the user without it: a template no
/// model can take, and a model or draft model that is no GGUF file, are refused
/// before any reload (the model in use is kept), and a family's template whose
/// tokens the model lacks reloads a model that serves all the same, with a warning
/// naming the problem.
#[test]
fn settings_the_model_cannot_use_leave_it_serving() {
    let mut client = ready_server(vscode_capabilities(), None, Value::Null);
    let uri = "file:///w/sums.py";
    client.open(uri, "python", "def total(values):\n    return ");
    let answers = |client: &mut LspClient| {
        let response = client.inline_completion(uri, 1, 11);
        assert!(response.get("error").is_none(), "{response}");
        !inline_items(&response).is_empty()
    };
    assert!(answers(&mut client));
    let warning = |needle: &'static str| {
        move |m: &Value| {
            m["method"] == "window/showMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains(needle))
        }
    };

    client.drain_backlog();
    change_settings(&mut client, json!({"template": "{prefix}{prefix}"}));
    let refused = client.wait_for(ANSWER_TIMEOUT, warning("`template`"));
    let text = refused["params"]["message"].as_str().unwrap();
    assert!(text.contains("twice") && text.contains("kept"), "{text}");
    assert_eq!(client.stats()["modelState"], "ready");
    assert!(answers(&mut client));

    let empty =
        std::env::temp_dir().join(format!("inkling-empty-draft-{}.gguf", std::process::id()));
    std::fs::write(&empty, b"").unwrap();
    for (settings, needle) in [
        // Refused before the model in use is let go: no reload.
        (json!({"draftModel": empty}), "`draftModel` not changed"),
        (
            json!({"model": std::env::temp_dir()}),
            "`model` not changed",
        ),
        (json!({"template": "qwen"}), "using the detected"),
    ] {
        client.drain_backlog();
        change_settings(&mut client, settings.clone());
        client.wait_for(LOAD_TIMEOUT, warning(needle));
        assert_eq!(client.stats()["modelState"], "ready", "{settings}");
        assert!(answers(&mut client), "{settings}");
        change_settings(&mut client, json!({}));
    }
    let _ = std::fs::remove_file(&empty);
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// A changed `httpPort` moves the HTTP endpoint: the new port answers with the
/// language server's pipeline, the old one stops listening.
#[test]
fn a_changed_http_port_moves_the_endpoint() {
    let free_port = || {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let listening = |port: u16| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok();
    let until = |wanted: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !wanted() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        wanted()
    };
    let mut client = ready_server(vscode_capabilities(), None, Value::Null);
    let first = free_port();
    change_settings(&mut client, json!({"inkling": {"httpPort": first}}));
    assert!(until(&|| listening(first)), "nothing listens on {first}");
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, first));
    let response = post(
        address,
        "/infill",
        &json!({"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n"}).to_string(),
    );
    assert_eq!(response.status, 200, "{:?}", response.json);

    let second = free_port();
    change_settings(&mut client, json!({"inkling": {"httpPort": second}}));
    assert!(until(&|| listening(second)), "nothing listens on {second}");
    assert!(until(&|| !listening(first)), "{first} still listens");
    change_settings(&mut client, json!({}));
    assert!(until(&|| !listening(second)), "{second} still listens");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// With a client that watches files, the server registers for the source files the
/// index reads; a file created on disk after startup and announced brings its
/// definition's signature into the prompt, and its deletion takes it out.
#[test]
fn files_changed_outside_the_editor_keep_the_index_current() {
    let folder = Folder::new("watched");
    let main = "from geometry import polygon_area\n\n\ndef report(points):\n    area = polygon_area(points)\n    return ";
    let main_uri = folder.write("main.py", main);
    let mut capabilities = vscode_capabilities();
    capabilities["workspace"] = json!({"didChangeWatchedFiles": {"dynamicRegistration": true}});
    let mut client = ready_server(capabilities, Some(&folder.0), json!({}));
    let registration = client.wait_for(ANSWER_TIMEOUT, |m| {
        m["method"] == "client/registerCapability"
    });
    let registered = &registration["params"]["registrations"][0];
    assert_eq!(registered["method"], "workspace/didChangeWatchedFiles");
    let patterns: Vec<&str> = registered["registerOptions"]["watchers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["globPattern"].as_str())
        .collect();
    assert!(
        patterns
            .iter()
            .any(|p| p.starts_with("**/*.{") && p.contains(",py,")),
        "{registration}"
    );

    client.open(&main_uri, "python", main);
    let cursor = (5, 11);
    let signature = "# def polygon_area(points: list) -> float:";
    let before = prompt_until(&mut client, &main_uri, cursor, |_| true);
    assert!(!before.contains(signature), "{before}");

    let created = folder.write(
        "geometry.py",
        "def polygon_area(points: list) -> float:\n    return 0.0\n",
    );
    client.notify(
        "workspace/didChangeWatchedFiles",
        json!({"changes": [{"uri": created, "type": 1}]}),
    );
    let with = prompt_until(&mut client, &main_uri, cursor, |t| t.contains(signature));
    assert!(with.contains(signature), "{with}");
    assert!(with.contains("# geometry.py\n"), "{with}");

    std::fs::remove_file(folder.0.join("geometry.py")).unwrap();
    client.notify(
        "workspace/didChangeWatchedFiles",
        json!({"changes": [{"uri": created, "type": 3}]}),
    );
    let without = prompt_until(&mut client, &main_uri, cursor, |t| !t.contains(signature));
    assert!(!without.contains(signature), "{without}");
    assert_eq!(client.stats()["indexedFiles"], 1);
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// `disabledPaths` and `disabledLanguages`: the disabled documents get empty
/// answers, and none of their text (signatures, ring chunks, the index) reaches
/// another file's prompt — until the setting is taken back.
#[test]
fn disabled_files_get_no_answers_and_stay_out_of_other_prompts() {
    let folder = Folder::new("disabled");
    let secret = "SERVICE_PASSWORD = 'hunter2-correct-horse'\n\n\ndef vault_token(user: str, scope: str) -> str:\n    return SERVICE_PASSWORD + user + scope\n";
    let secret_uri = folder.write("secrets/vault.py", secret);
    folder.write(
        "secrets/indexed.py",
        "def rotate_keys(days: int) -> None:\n    pass\n",
    );
    let notes = "# Deploy notes\n\nThe staging password is swordfish-42.\nRotate it monthly.\nAsk ops first.\n";
    let notes_uri = folder.write("notes.md", notes);
    let main = "from secrets.vault import vault_token\nfrom secrets.indexed import rotate_keys\n\n\ndef login(user):\n    rotate_keys(30)\n    token = vault_token(user, 'read')\n    return ";
    let main_uri = folder.write("main.py", main);
    let mut client = ready_server(
        vscode_capabilities(),
        Some(&folder.0),
        json!({"disabledPaths": ["secrets/**", "*.env"], "disabledLanguages": ["markdown"]}),
    );
    client.open(&secret_uri, "python", secret);
    client.open(&notes_uri, "markdown", notes);
    client.open(&main_uri, "python", main);

    let requests = counter(&mut client, "requests");
    for (uri, line, character) in [(&secret_uri, 4, 11), (&notes_uri, 4, 14)] {
        let response = client.inline_completion(uri, line, character);
        assert!(inline_items(&response).is_empty(), "{uri}: {response}");
    }
    assert_eq!(
        counter(&mut client, "requests"),
        requests,
        "the model was asked"
    );
    let answer = client.inline_completion(&main_uri, 7, 11);
    assert!(!inline_items(&answer).is_empty(), "{answer}");

    let cursor = (7, 11);
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.stats()["indexedFiles"] == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(client.stats()["indexedFiles"], 1, "only main.py is indexed");
    let prompt = text_of(&client.prompt(&main_uri, cursor.0, cursor.1));
    for leaked in [
        "vault_token(user: str",
        "hunter2",
        "rotate_keys(days",
        "swordfish",
    ] {
        assert!(!prompt.contains(leaked), "{leaked} in {prompt}");
    }

    // Taken back: the same files are material again (so it was the setting).
    change_settings(&mut client, json!({"inkling": {"disabledPaths": []}}));
    let prompt = prompt_until(&mut client, &main_uri, cursor, |t| {
        t.contains("rotate_keys(days") && t.contains("vault_token(user: str")
    });
    assert!(
        prompt.contains("vault_token(user: str, scope: str) -> str:"),
        "{prompt}"
    );
    assert!(
        prompt.contains("rotate_keys(days: int) -> None:"),
        "{prompt}"
    );
    assert!(!prompt.contains("swordfish"), "{prompt}");
    let response = client.inline_completion(&secret_uri, 4, 11);
    assert!(!inline_items(&response).is_empty(), "{response}");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// The HTTP endpoint honours the same options where a request says which file it is
/// for (the optional `filename` and `language` fields).
#[test]
fn http_requests_for_disabled_files_get_empty_answers() {
    let server = HttpServer::start(&[
        "--disabled-paths",
        "secrets/**",
        "--disabled-languages",
        "markdown",
    ]);
    let infill = |extra: Value| {
        let mut body = json!({
            "input_prefix": "def fibonacci(n):\n    if n < 2:\n        return n\n    return ",
            "input_suffix": "\n",
            "n_predict": 16,
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        server.post("/infill", &body.to_string())
    };
    // Answered first (the first request may meet the prompt time limit of a cold
    // cache: asked again, it carries on), so that the same text, asked for a disabled
    // file, would be answered from memory if the file were not checked.
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = loop {
        let response = infill(json!({"filename": "src/fib.py"}));
        if response.json["content"] != "" || Instant::now() > deadline {
            break response;
        }
    };
    assert_ne!(answered.json["content"], "", "{:?}", answered.json);
    for disabled in [
        json!({"filename": "secrets/fib.py"}),
        json!({"filename": "notes/fib.md", "language": "markdown"}),
    ] {
        let response = infill(disabled.clone());
        assert_eq!(response.status, 200, "{disabled}: {:?}", response.json);
        assert_eq!(
            response.json["content"], "",
            "{disabled}: {:?}",
            response.json
        );
        assert_eq!(response.json["timings"]["predicted_n"], 0);
    }
    let completions = |extra: Value| {
        let mut body = json!({"prompt": "def add(a, b):\n    return ", "max_tokens": 8});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        server.post("/v1/completions", &body.to_string())
    };
    let answered = loop {
        let response = completions(json!({}));
        if response.json["choices"][0]["text"] != "" || Instant::now() > deadline {
            break response;
        }
    };
    assert_ne!(
        answered.json["choices"][0]["text"], "",
        "{:?}",
        answered.json
    );
    let disabled = completions(json!({"filename": "secrets/add.py"}));
    assert_eq!(disabled.status, 200, "{:?}", disabled.json);
    assert_eq!(
        disabled.json["choices"][0]["text"], "",
        "{:?}",
        disabled.json
    );
}

/// The automatic answers at `positions` (a line of `sample.py` typed up to a
/// column, the rest of the line not there yet), each in a document of its own.
fn typed_into_lines(options: Value, positions: &[(usize, usize)]) -> Vec<String> {
    let sample = include_str!("../fixtures/sample.py");
    let lines: Vec<&str> = sample.lines().collect();
    let mut client = ready_server(vscode_capabilities(), None, options);
    let answers = positions
        .iter()
        .map(|&(line, column)| {
            let mut text = lines[..line].join("\n");
            text.push('\n');
            text.push_str(&lines[line][..column]);
            text.push('\n');
            text.push_str(&lines[line + 1..].join("\n"));
            let uri = format!("file:///tmp/typed-{line}.py");
            client.open(&uri, "python", &text);
            let id = client.send_inline_completion_triggered(&uri, line as u32, column as u32, 2);
            let response = client.response(id, ANSWER_TIMEOUT);
            assert!(response.get("error").is_none(), "{response}");
            let items = inline_items(&response);
            items.first().map_or(String::new(), |item| {
                item["insertText"].as_str().unwrap_or_default().to_owned()
            })
        })
        .collect();
    client.shutdown_and_exit();
    answers
}

#[test]
fn in_a_line_begun_an_automatic_answer_ends_where_the_model_is_unsure() {
    // Code lines of `sample.py`, typed past their first word.
    let positions = [
        (12, 15),
        (20, 14),
        (21, 16),
        (26, 15),
        (28, 18),
        (29, 19),
        (32, 15),
        (35, 15),
        (42, 16),
        (43, 18),
        (46, 14),
        (47, 14),
    ];
    let whole = typed_into_lines(json!({"stopWhenUnsure": false}), &positions);
    let sure = typed_into_lines(json!({}), &positions);
    let mut shorter = 0;
    for ((position, whole), sure) in positions.iter().zip(&whole).zip(&sure) {
        assert!(
            whole.starts_with(sure.as_str()),
            "at {position:?}: {sure:?} is not the start of {whole:?}"
        );
        if !sure.is_empty() && sure.len() < whole.len() {
            shorter += 1;
        }
    }
    // Where the model doubts a token, the answer stops before it (and still shows
    // what it is sure of).
    assert!(shorter >= 2, "whole: {whole:?}\nsure: {sure:?}");
}
