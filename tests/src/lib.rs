//! A minimal LSP client that drives the real `inkling` binary over stdio.
//!
//! Used by the end-to-end tests, the demo session and the benchmarks, so all of
//! them speak to the server exactly as an editor does: framed JSON-RPC on the
//! child's stdin/stdout. A reader thread parses frames, answers the server's own
//! requests (`window/workDoneProgress/create`, …) with `null` or what the test set
//! with [`LspClient::answer`], and queues every message, those requests included.

pub mod fault;
pub mod http;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where the `inkling` binary is: `$INKLING_BIN`, else next to the running
/// executable's profile directory (`target/<profile>/inkling`).
pub fn inkling_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("INKLING_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("inkling");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --release)",
        bin.display()
    );
    bin
}

/// The default model's path, as `inkling fetch-model` prints it (fetching it first
/// if the cache lacks it).
pub fn default_model_path() -> String {
    let output = Command::new(inkling_binary())
        .arg("fetch-model")
        .stderr(Stdio::inherit())
        .output()
        .expect("run inkling fetch-model");
    assert!(output.status.success(), "inkling fetch-model failed");
    String::from_utf8(output.stdout)
        .expect("a UTF-8 path")
        .trim()
        .to_owned()
}

/// A running server and the client end of its stdio.
pub struct LspClient {
    child: Child,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    messages: Receiver<Value>,
    /// Messages received but not yet consumed (notifications, other responses).
    backlog: VecDeque<Value>,
    next_id: i64,
    /// Results for the server's requests, by method; others are answered `null`.
    answers: Arc<Mutex<HashMap<String, Value>>>,
}

/// How to start a server.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl LspClient {
    /// Starts `inkling` with default arguments.
    pub fn start() -> LspClient {
        LspClient::launch(&Launch::default())
    }

    /// Starts `inkling` as `launch` says; its stderr goes to ours.
    pub fn launch(launch: &Launch) -> LspClient {
        let mut child = Command::new(inkling_binary())
            .args(&launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn inkling");
        let stdin = Arc::new(Mutex::new(child.stdin.take()));
        let stdout = child.stdout.take().expect("stdout");
        let (sender, messages) = mpsc::channel();
        let replies = stdin.clone();
        let answers: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let results = answers.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Some(message) = read_frame(&mut reader) {
                if let (Some(method), Some(id)) = (message["method"].as_str(), message.get("id")) {
                    // A request from the server: accept it.
                    let result = results.lock().unwrap().get(method).cloned();
                    let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
                    if let Some(stdin) = replies.lock().unwrap().as_mut() {
                        let _ = write_frame(stdin, &reply);
                    }
                }
                if sender.send(message).is_err() {
                    break;
                }
            }
        });
        LspClient {
            child,
            stdin,
            messages,
            backlog: VecDeque::new(),
            next_id: 1,
            answers,
        }
    }

    /// Answers the server's requests of `method` with `result` from now on (instead
    /// of `null`), e.g. `workspace/configuration` with the client's settings.
    pub fn answer(&mut self, method: &str, result: Value) {
        self.answers
            .lock()
            .unwrap()
            .insert(method.to_owned(), result);
    }

    /// Writes raw bytes to the server's stdin.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let mut stdin = self.stdin.lock().unwrap();
        let stdin = stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes).expect("write to server");
        stdin.flush().expect("flush");
    }

    fn send(&mut self, message: &Value) {
        let mut stdin = self.stdin.lock().unwrap();
        write_frame(stdin.as_mut().expect("stdin is open"), message).expect("write to server");
    }

    /// Sends a request and returns its id without waiting.
    pub fn send_request(&mut self, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(&message);
        id
    }

    /// Sends a notification.
    pub fn notify(&mut self, method: &str, params: Value) {
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.send(&message);
    }

    /// `inkling/didFocus`: the cursor of the active editor is at `line`:`character`
    /// of `uri`, as our VS Code extension and Neovim plugin report it.
    pub fn focus(&mut self, uri: &str, line: u32, character: u32) {
        self.notify(
            "inkling/didFocus",
            json!({
                "textDocument": {"uri": uri},
                "position": {"line": line, "character": character},
            }),
        );
    }

    /// Waits for the first message that `wanted` accepts, keeping the others.
    pub fn wait_for(&mut self, timeout: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&wanted) {
            return self.backlog.remove(i).expect("index in range");
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(message) if wanted(&message) => return message,
                Ok(message) => self.backlog.push_back(message),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no matching message within {timeout:?}; backlog: {:?}",
                        self.backlog
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("server closed stdout; backlog: {:?}", self.backlog)
                }
            }
        }
    }

    /// Waits for the response to request `id` (the whole message: `result` or `error`).
    pub fn response(&mut self, id: i64, timeout: Duration) -> Value {
        self.wait_for(timeout, |m| {
            m.get("id") == Some(&json!(id)) && m.get("method").is_none()
        })
    }

    /// Sends a request and waits for its response message.
    pub fn request(&mut self, method: &str, params: Value, timeout: Duration) -> Value {
        let id = self.send_request(method, params);
        self.response(id, timeout)
    }

    /// Messages received so far that nobody waited for, without waiting for more.
    pub fn drain_backlog(&mut self) -> Vec<Value> {
        while let Ok(message) = self.messages.try_recv() {
            self.backlog.push_back(message);
        }
        self.backlog.drain(..).collect()
    }

    /// `initialize` + `initialized` with `capabilities` and `options`; returns the result.
    pub fn initialize(&mut self, capabilities: Value, options: Value) -> Value {
        self.initialize_in(None, capabilities, options)
    }

    /// [`LspClient::initialize`] with a workspace folder.
    pub fn initialize_in(
        &mut self,
        root: Option<&std::path::Path>,
        capabilities: Value,
        options: Value,
    ) -> Value {
        let root_uri = root.map(|r| format!("file://{}", r.display()));
        let response = self.request(
            "initialize",
            json!({
                "processId": std::process::id(),
                "rootUri": root_uri,
                "capabilities": capabilities,
                "initializationOptions": options,
            }),
            Duration::from_secs(10),
        );
        self.notify("initialized", json!({}));
        response["result"].clone()
    }

    /// Polls `inkling/stats` until the model is ready; panics if it fails or times out.
    pub fn wait_until_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.request("inkling/stats", Value::Null, Duration::from_secs(10));
            match stats["result"]["modelState"].as_str() {
                Some("ready") => return,
                Some("failed") => panic!("model failed to load: {:?}", self.drain_backlog()),
                _ if Instant::now() > deadline => panic!("model not ready within {timeout:?}"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `inkling/prompt` at a position: the result, or the error.
    pub fn prompt(&mut self, uri: &str, line: u32, character: u32) -> Value {
        let response = self.request(
            "inkling/prompt",
            LspClient::position_params(uri, line, character),
            Duration::from_secs(60),
        );
        if response.get("error").is_some() {
            return response;
        }
        response["result"].clone()
    }

    /// `inkling/stats` result.
    pub fn stats(&mut self) -> Value {
        self.request("inkling/stats", Value::Null, Duration::from_secs(10))["result"].clone()
    }

    /// `textDocument/didOpen`.
    pub fn open(&mut self, uri: &str, language_id: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": language_id, "version": 1, "text": text}}),
        );
    }

    /// `textDocument/didChange` with one range edit.
    pub fn edit(
        &mut self,
        uri: &str,
        version: i32,
        start: (u32, u32),
        end: (u32, u32),
        text: &str,
    ) {
        self.notify(
            "textDocument/didChange",
            json!({
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{
                    "range": {"start": {"line": start.0, "character": start.1},
                              "end": {"line": end.0, "character": end.1}},
                    "text": text,
                }],
            }),
        );
    }

    /// `textDocument/didChange` replacing the whole text.
    pub fn replace(&mut self, uri: &str, version: i32, text: &str) {
        self.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]}),
        );
    }

    /// Parameters of a position request at `line`:`character` of `uri`.
    pub fn position_params(uri: &str, line: u32, character: u32) -> Value {
        json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
    }

    /// `textDocument/inlineCompletion` (invoked) at a position; returns the response message.
    pub fn inline_completion(&mut self, uri: &str, line: u32, character: u32) -> Value {
        let id = self.send_inline_completion(uri, line, character);
        self.response(id, Duration::from_secs(120))
    }

    /// Sends an invoked `textDocument/inlineCompletion` without waiting; returns the id.
    pub fn send_inline_completion(&mut self, uri: &str, line: u32, character: u32) -> i64 {
        self.send_inline_completion_triggered(uri, line, character, 1)
    }

    /// Sends `textDocument/inlineCompletion` with `trigger_kind` (1 invoked, 2 automatic,
    /// as while typing) without waiting; returns the request id.
    pub fn send_inline_completion_triggered(
        &mut self,
        uri: &str,
        line: u32,
        character: u32,
        trigger_kind: u32,
    ) -> i64 {
        let mut params = LspClient::position_params(uri, line, character);
        params["context"] = json!({"triggerKind": trigger_kind});
        self.send_request("textDocument/inlineCompletion", params)
    }

    /// Runs an item's `command` as generic clients do once the item is accepted
    /// (VS Code's language client, Neovim's `exec_cmd`): `workspace/executeCommand`
    /// with its `command` and `arguments`. Returns the response message.
    pub fn execute_command(&mut self, command: &Value) -> Value {
        self.request(
            "workspace/executeCommand",
            json!({"command": command["command"], "arguments": command["arguments"]}),
            Duration::from_secs(10),
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `shutdown` then `exit`; returns the process's exit status.
    pub fn shutdown_and_exit(mut self) -> ExitStatus {
        let response = self.request("shutdown", Value::Null, Duration::from_secs(10));
        assert!(
            response.get("error").is_none(),
            "shutdown failed: {response}"
        );
        self.notify("exit", Value::Null);
        self.wait_exit(Duration::from_secs(10))
    }

    /// Closes the server's stdin (the server sees end of file).
    pub fn close_stdin(&mut self) {
        self.stdin.lock().unwrap().take();
    }

    /// Waits for the process to end; kills it and panics after `timeout`.
    pub fn wait_exit(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LspClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes one `Content-Length` framed message.
pub fn write_frame(out: &mut impl Write, message: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(message)?;
    write!(out, "Content-Length: {}\r\n\r\n", body.len())?;
    out.write_all(&body)?;
    out.flush()
}

/// Reads one framed message; `None` at end of stream.
fn read_frame(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length:") {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).expect("server sent invalid JSON"))
}

/// The items of an inline-completion response (array or list form).
pub fn inline_items(response: &Value) -> Vec<Value> {
    let result = &response["result"];
    let items = result.get("items").unwrap_or(result);
    items.as_array().cloned().unwrap_or_default()
}

/// The first item's text of an inline completion response, or "".
pub fn first_text(response: &Value) -> String {
    inline_items(response)
        .first()
        .and_then(|item| item["insertText"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Client capabilities like VS Code's, as far as inkling cares.
pub fn vscode_capabilities() -> Value {
    json!({
        "general": {"positionEncodings": ["utf-16"]},
        "window": {"workDoneProgress": true},
        "textDocument": {"inlineCompletion": {"dynamicRegistration": true}},
    })
}
