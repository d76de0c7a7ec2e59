//! End-to-end tests of the models users already have: Ollama's manifests and blobs,
//! LM Studio's folders and the Hugging Face hub cache (snapshots of symbolic links,
//! `refs/main`), each built in a temporary HOME around the real default model
//! (linked, not copied). `inkling models` lists them with their names, and the real
//! server loads a model by each name, from the command line and from
//! `initializationOptions`; an unknown name is refused with the names there are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use inkling_harness::{Launch, LspClient, default_model_path, inkling_binary, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(180);
/// The default model's sha256, which names its Ollama blob.
const MODEL_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const HF_REVISION: &str = "9b0d6a1c2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b";
const CHAT_WARNING: &str = "warning: this looks like a chat/instruct model (it has a chat template and no FIM tokens); inline completion needs a base or FIM (\"coder\") model";
const DEFAULT_FACTS: &str =
    "    \"Gemma 3 270m\", 253 MB, architecture gemma3, template prefix-only\n";

/// A temporary HOME with every layout; removed when dropped.
struct Machine {
    root: PathBuf,
    home: PathBuf,
    ollama: PathBuf,
    hf_home: PathBuf,
    /// A Python file to build prompts in, and its folder.
    source: PathBuf,
}

impl Machine {
    fn new(name: &str) -> Machine {
        let root =
            std::env::temp_dir().join(format!("inkling-models-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let machine = Machine {
            home: root.join("home"),
            ollama: root.join("ollama"),
            hf_home: root.join("hf"),
            source: root.join("work").join("add.py"),
            root,
        };
        let model = PathBuf::from(default_model_path());

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:0c0f", "size": 10},
            "layers": [
                {"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{MODEL_SHA256}"), "size": 253113024},
                {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:11ce", "size": 10},
            ]
        });
        write(
            &machine
                .ollama
                .join("manifests/registry.ollama.ai/library/gemma3/270m"),
            manifest.to_string().as_bytes(),
        );
        link(
            &model,
            &machine.ollama.join(format!("blobs/sha256-{MODEL_SHA256}")),
        );

        let lmstudio = machine
            .home
            .join(".lmstudio/models/lmstudio-community/gemma-3-270m-GGUF");
        link(&model, &lmstudio.join("gemma-3-270m-Q4_K_M.gguf"));
        // The older LM Studio folder, with an instruct model (a vocabulary alone).
        let chat = vocabulary_only(
            &["<pad>", "<bos>", "<start_of_turn>"],
            Some("{{ messages }}"),
        );
        write(
            &machine
                .home
                .join(".cache/lm-studio/models/someone/chat-GGUF/chat-Q8_0.gguf"),
            &chat,
        );

        let repository = machine
            .hf_home
            .join("hub/models--unsloth--gemma-3-270m-GGUF");
        link(&model, &repository.join("blobs").join(MODEL_SHA256));
        write(&repository.join("refs/main"), HF_REVISION.as_bytes());
        let snapshot = repository.join("snapshots").join(HF_REVISION);
        fs::create_dir_all(&snapshot).unwrap();
        for name in ["gemma-3-270m-Q4_K_M.gguf", "mmproj-F16.gguf"] {
            std::os::unix::fs::symlink(format!("../../blobs/{MODEL_SHA256}"), snapshot.join(name))
                .unwrap();
        }
        // An older revision, which refs/main passes over.
        link(
            &model,
            &repository.join("snapshots/0ld/gemma-3-270m-old.gguf"),
        );
        // A FIM model's vocabulary in two quantizations: named by file.
        let coder = vocabulary_only(
            &[
                "<|endoftext|>",
                "<|fim_prefix|>",
                "<|fim_middle|>",
                "<|fim_suffix|>",
                "<|file_sep|>",
            ],
            Some("{{ messages }}"),
        );
        for file in ["coder-q4_k_m.gguf", "coder-q8_0.gguf"] {
            write(
                &machine
                    .hf_home
                    .join("hub/models--tiny--coder-GGUF/snapshots/r1")
                    .join(file),
                &coder,
            );
        }

        link(
            &model,
            &machine.home.join(".cache/inkling/gemma-3-270m-q4_k_m.gguf"),
        );
        write(
            &machine.source,
            b"def add(a, b):\n    return a + b\n\nprint(add(1, ",
        );
        machine
    }

    /// The environment that points inkling at this machine; empty values count as unset.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("HOME", self.home.display().to_string()),
            ("OLLAMA_MODELS", self.ollama.display().to_string()),
            ("HF_HOME", self.hf_home.display().to_string()),
            ("HF_HUB_CACHE", String::new()),
            ("XDG_CACHE_HOME", String::new()),
            ("INKLING_CACHE_DIR", String::new()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn inkling(&self, args: &[&str]) -> Output {
        Command::new(inkling_binary())
            .args(args)
            .envs(self.env())
            .output()
            .expect("run inkling")
    }

    /// `inkling prompt` at the end of the Python file with `--model model`.
    fn prompt(&self, model: &str) -> Output {
        let location = format!("{}:4:14", self.source.display());
        let root = self.source.parent().unwrap().display().to_string();
        self.inkling(&["prompt", "--model", model, &location, "--root", &root])
    }

    fn launch(&self) -> LspClient {
        LspClient::launch(&Launch {
            env: self.env(),
            ..Launch::default()
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A hard link to `target` (a symbolic one across file systems): no 253 MB copies.
fn link(target: &Path, path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    if fs::hard_link(target, path).is_err() {
        std::os::unix::fs::symlink(target, path).unwrap();
    }
}

/// A GGUF file with a vocabulary and no tensors: control tokens `tokens`, and a chat
/// template when given. For listing only; it cannot be loaded as a model.
fn vocabulary_only(tokens: &[&str], chat_template: Option<&str>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let entries = 4 + u64::from(chat_template.is_some());
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(entries.to_le_bytes());
    for (key, value) in [
        ("general.architecture", "llama"),
        ("tokenizer.ggml.model", "gpt2"),
    ]
    .into_iter()
    .chain(chat_template.map(|t| ("tokenizer.chat_template", t)))
    {
        string(&mut out, key);
        out.extend(8u32.to_le_bytes());
        string(&mut out, value);
    }
    string(&mut out, "tokenizer.ggml.tokens");
    out.extend(9u32.to_le_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend((tokens.len() as u64).to_le_bytes());
    for token in tokens {
        string(&mut out, token);
    }
    string(&mut out, "tokenizer.ggml.token_type");
    out.extend(9u32.to_le_bytes());
    out.extend(5u32.to_le_bytes());
    out.extend((tokens.len() as u64).to_le_bytes());
    for _ in tokens {
        out.extend(3i32.to_le_bytes());
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn inkling_models_lists_every_layout_under_the_name_for_model() {
    let machine = Machine::new("list");
    let output = machine.inkling(&["models"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listing = stdout(&output);
    let hub = machine.hf_home.join("hub");
    let expected = [
        format!(
            "(the default model: no --model needed)\n{DEFAULT_FACTS}    {}\n",
            machine
                .home
                .join(".cache/inkling/gemma-3-270m-q4_k_m.gguf")
                .display()
        ),
        format!(
            "ollama:gemma3:270m\n{DEFAULT_FACTS}    {}\n",
            machine
                .ollama
                .join(format!("blobs/sha256-{MODEL_SHA256}"))
                .display()
        ),
        format!(
            "lmstudio:lmstudio-community/gemma-3-270m-GGUF\n{DEFAULT_FACTS}    {}\n",
            machine
                .home
                .join(
                    ".lmstudio/models/lmstudio-community/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf"
                )
                .display()
        ),
        format!(
            "lmstudio:someone/chat-GGUF\n    0 MB, architecture llama, template prefix-only\n    {}\n    {CHAT_WARNING}",
            machine
                .home
                .join(".cache/lm-studio/models/someone/chat-GGUF/chat-Q8_0.gguf")
                .display()
        ),
        format!(
            "hf:tiny/coder-GGUF/coder-q4_k_m.gguf\n    0 MB, architecture llama, template qwen\n    {}\nhf:tiny/coder-GGUF/coder-q8_0.gguf\n",
            hub.join("models--tiny--coder-GGUF/snapshots/r1/coder-q4_k_m.gguf")
                .display()
        ),
        format!(
            "hf:unsloth/gemma-3-270m-GGUF\n{DEFAULT_FACTS}    {}\n",
            hub.join("models--unsloth--gemma-3-270m-GGUF/snapshots")
                .join(HF_REVISION)
                .join("gemma-3-270m-Q4_K_M.gguf")
                .display()
        ),
    ];
    let mut rest = listing.as_str();
    for entry in &expected {
        let at = rest
            .find(entry.as_str())
            .unwrap_or_else(|| panic!("missing, or out of order:\n{entry}\nin:\n{listing}"));
        rest = &rest[at + entry.len()..];
    }
    assert!(listing.starts_with(&expected[0]), "{listing}");
    assert_eq!(listing.matches("warning:").count(), 1, "{listing}");
    for left_out in ["mmproj", "gemma-3-270m-old"] {
        assert!(!listing.contains(left_out), "{left_out}: {listing}");
    }
    assert!(
        listing.ends_with(&format!(
            "searched: Ollama ({}), LM Studio ({}, {}), Hugging Face ({}), inkling's cache ({})\n",
            machine.ollama.display(),
            machine.home.join(".lmstudio/models").display(),
            machine.home.join(".cache/lm-studio/models").display(),
            hub.display(),
            machine.home.join(".cache/inkling").display(),
        )),
        "{listing}"
    );
}

/// Each name loads the same model as its path: `inkling prompt` prints the same
/// prompt, and the log names the file the name resolved to.
#[test]
fn each_name_loads_its_model_in_the_real_server() {
    let machine = Machine::new("resolve");
    let hub = machine
        .hf_home
        .join("hub/models--unsloth--gemma-3-270m-GGUF");
    let baseline = machine.prompt(&default_model_path());
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let prompt = stdout(&baseline);
    assert!(
        prompt.contains("def add(a, b):\n    return a + b\n"),
        "{prompt}"
    );
    let cases = [
        (
            "ollama:gemma3:270m",
            machine.ollama.join(format!("blobs/sha256-{MODEL_SHA256}")),
        ),
        (
            "lmstudio:lmstudio-community/gemma-3-270m-GGUF",
            machine.home.join(
                ".lmstudio/models/lmstudio-community/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf",
            ),
        ),
        (
            "hf:unsloth/gemma-3-270m-GGUF",
            hub.join("snapshots")
                .join(HF_REVISION)
                .join("gemma-3-270m-Q4_K_M.gguf"),
        ),
        (
            "hf:unsloth/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf",
            hub.join("snapshots")
                .join(HF_REVISION)
                .join("gemma-3-270m-Q4_K_M.gguf"),
        ),
    ];
    for (name, path) in cases {
        let output = machine.prompt(name);
        let log = stderr(&output);
        assert!(output.status.success(), "{name}: {log}");
        assert_eq!(stdout(&output), prompt, "{name}");
        assert!(
            log.contains(&format!("model={}", path.display())),
            "{name}: {log}"
        );
    }
}

#[test]
fn initialization_options_take_names_too() {
    let machine = Machine::new("lsp");
    let mut client = machine.launch();
    client.initialize(vscode_capabilities(), json!({"model": "ollama:gemma3"}));
    let status = client.wait_for(LOAD_TIMEOUT, |m| {
        m["method"] == "inkling/status" && m["params"]["state"] != "loading"
    });
    // `ollama:gemma3` is `gemma3:latest`, which this machine lacks.
    assert_eq!(status["params"]["state"], "failed", "{status}");
    let message = status["params"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("no Ollama model `gemma3:latest`; found: ollama:gemma3:270m, "),
        "{message}"
    );
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");

    let mut client = machine.launch();
    client.initialize(
        vscode_capabilities(),
        json!({"model": "ollama:gemma3:270m"}),
    );
    let status = client.wait_for(LOAD_TIMEOUT, |m| {
        m["method"] == "inkling/status" && m["params"]["state"] != "loading"
    });
    let message = status["params"]["message"].as_str().unwrap_or_default();
    let blob = machine.ollama.join(format!("blobs/sha256-{MODEL_SHA256}"));
    assert!(
        message.starts_with(&format!(
            "model ready: {} (prefix-only template",
            blob.display()
        )),
        "{status}"
    );
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_unknown_name_is_refused_with_the_names_there_are() {
    let machine = Machine::new("unknown");
    let found = "ollama:gemma3:270m, lmstudio:lmstudio-community/gemma-3-270m-GGUF, \
        lmstudio:someone/chat-GGUF, hf:tiny/coder-GGUF/coder-q4_k_m.gguf, \
        hf:tiny/coder-GGUF/coder-q8_0.gguf, hf:unsloth/gemma-3-270m-GGUF";
    let cases = [
        (
            "ollama:x",
            format!("no Ollama model `x:latest`; found: {found}"),
        ),
        (
            "lmstudio:someone/other",
            format!("no LM Studio model `someone/other`; found: {found}"),
        ),
        (
            "hf:tiny/coder-GGUF",
            "hf:tiny/coder-GGUF has several GGUF files; name one: \
             hf:tiny/coder-GGUF/coder-q4_k_m.gguf, hf:tiny/coder-GGUF/coder-q8_0.gguf"
                .to_owned(),
        ),
        (
            "gemma3",
            format!(
                "cannot open model gemma3: no such file; models found (names for --model): {found}"
            ),
        ),
    ];
    for (name, error) in cases {
        let output = machine.prompt(name);
        assert!(!output.status.success(), "{name}");
        assert!(stdout(&output).is_empty(), "{name}");
        let log = stderr(&output);
        assert!(log.contains(&error), "{name}: expected {error}\nin: {log}");
    }

    let mut client = machine.launch();
    client.initialize(vscode_capabilities(), json!({"model": "hf:nobody/nothing"}));
    let message = client.wait_for(LOAD_TIMEOUT, |m| m["method"] == "window/showMessage");
    assert_eq!(message["params"]["type"], 1, "{message}");
    assert_eq!(
        message["params"]["message"],
        Value::from(format!(
            "inkling: no Hugging Face model `nobody/nothing`; found: {found}"
        ))
    );
    assert_eq!(client.stats()["modelState"], "failed");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}
