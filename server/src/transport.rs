//! The stdio transport around `tower-lsp-server`, hardened against bad frames.
//!
//! tower-lsp-server stops reading for good after one frame it cannot decode
//! (malformed JSON, or JSON that is not a JSON-RPC message), which would end the
//! whole server. So frames pass through a guard first: each is parsed here, good
//! ones are forwarded to tower-lsp (with the ways clients say "nothing" that its
//! types refuse made uniform: `without_empty_params`, `with_settings_field`), and a
//! bad one is answered with a JSON-RPC error (-32700 parse error or -32600 invalid
//! request) written between tower-lsp's own frames, never inside one. A frame
//! passes only if tower-lsp's own message types decode it, so the guard and the
//! decoder cannot disagree (a repeated key, which `serde_json::Value` accepts and
//! tower-lsp refuses, once ended the server).
//!
//! Memory stays bounded whatever the client does: a frame holds at most
//! [`MAX_FRAME_BYTES`] and [`MAX_JSON_VALUES`] values (counted before anything is
//! parsed), the outgoing queue holds [`OUTGOING_FRAMES`] frames, and a client that
//! keeps writing but stops reading for [`STALLED_CLIENT`] is dropped. Error texts
//! sent back, and the texts of messages shown or logged (which may quote a setting),
//! are cut to [`MAX_MESSAGE_BYTES`], so nothing big is echoed.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::sync::mpsc;
use tower_lsp_server::{ClientSocket, LspService, Server, jsonrpc};

use crate::lsp::{LspServer, STATS_METHOD};

/// Most bytes in one message body; a larger message is skipped and refused.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;
/// Most bytes read as one header line.
const MAX_HEADER_BYTES: u64 = 8 << 10;
/// Most JSON values (numbers, strings, containers, …) in one message. A document's
/// text is one string however long; a message of millions of tiny values would
/// cost tens of bytes of parsed tree per byte of input.
const MAX_JSON_VALUES: usize = 1 << 20;
/// Frames waiting for the client to read them.
const OUTGOING_FRAMES: usize = 256;
/// How long the outgoing queue may stay full before the client counts as gone.
const STALLED_CLIENT: Duration = Duration::from_secs(30);
/// Longest error message sent back; longer ones (which may quote the request) are cut.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Serves `service` with messages read from `input` and written to `output` until
/// the client sends `exit` or closes `input`.
pub async fn serve(
    input: impl AsyncRead + Unpin + Send + 'static,
    output: impl AsyncWrite + Unpin + Send + 'static,
    service: LspService<LspServer>,
    socket: ClientSocket,
) {
    let (server_in, guard_out) = tokio::io::duplex(1 << 16);
    let (server_out, guard_in) = tokio::io::duplex(1 << 16);
    // Whole frames only, from tower-lsp and from the guard, go through one channel to
    // one writer, so no frame is ever split or lost.
    let (frames, outgoing) = mpsc::channel(OUTGOING_FRAMES);
    tokio::spawn(filter_input(
        BufReader::new(input),
        guard_out,
        frames.clone(),
    ));
    tokio::spawn(forward_server_frames(BufReader::new(guard_in), frames));
    tokio::spawn(write_frames(outgoing, output));
    Server::new(server_in, server_out, socket)
        // Completions wait on one engine; let edits and cancels through meanwhile.
        .concurrency_level(64)
        .serve(service)
        .await;
}

/// A frame's body, or why it was refused (it was skipped whole).
pub(crate) type FrameBody = Result<Vec<u8>, Refusal>;

/// Why a frame was skipped, and its request's id when the start of its body shows
/// one (see [`top_level_id`]): the client's request then still ends, with an error.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub reason: String,
    pub id: Value,
}

/// Bytes at the start of a skipped frame's body read for its id.
const ID_SCAN_BYTES: u64 = 64 * 1024;

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncBufRead + Unpin),
    max_bytes: u64,
) -> std::io::Result<Option<FrameBody>> {
    let mut length = None;
    // A length header whose value is no length: the frame cannot be read.
    let mut bad_length: Option<String> = None;
    let mut line = Vec::new();
    // Whether the last piece read was cut from a line longer than MAX_HEADER_BYTES.
    let mut in_long_line = false;
    loop {
        line.clear();
        // A header line is short; a longer one is read in pieces, and only its
        // first piece counts (its last piece, even a lone "\n", is not a blank line).
        if (&mut *reader)
            .take(MAX_HEADER_BYTES)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Ok(None);
        }
        let continues_a_line = in_long_line;
        in_long_line = line.last() != Some(&b'\n');
        if continues_a_line {
            continue;
        }
        let header = String::from_utf8_lossy(&line);
        let header = header.trim_end();
        if header.is_empty() {
            if length.is_some() {
                break;
            }
            if let Some(value) = bad_length.take() {
                // What follows is read as headers again until the next frame's.
                return Ok(Some(Err(Refusal {
                    reason: format!(
                        "a frame's Content-Length `{value}` is no length; the frame is skipped"
                    ),
                    id: Value::Null,
                })));
            }
            continue; // Blank lines between frames are tolerated.
        }
        // Found anywhere in the line, so stray bytes before a header resynchronise;
        // header names are case-insensitive (as in HTTP, whose framing LSP borrows).
        const NAME: &str = "content-length:";
        if let Some(at) = header.to_ascii_lowercase().find(NAME) {
            let value = header[at + NAME.len()..].trim();
            length = value.parse::<u64>().ok();
            bad_length = length.is_none().then(|| value.chars().take(40).collect());
        }
    }
    let length = length.unwrap_or(0);
    if length > max_bytes {
        let mut start = Vec::new();
        (&mut *reader)
            .take(ID_SCAN_BYTES.min(length))
            .read_to_end(&mut start)
            .await?;
        let rest = length - start.len() as u64;
        tokio::io::copy(&mut (&mut *reader).take(rest), &mut tokio::io::sink()).await?;
        return Ok(Some(Err(Refusal {
            reason: format!("message of {length} bytes is over the limit of {max_bytes}"),
            id: top_level_id(&start, rest > 0),
        })));
    }
    let mut body = vec![0; length as usize];
    reader.read_exact(&mut body).await?;
    Ok(Some(Ok(body)))
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The frame's body parsed, if it is a JSON-RPC message tower-lsp will decode;
/// otherwise the error response to send back.
pub(crate) fn parse_message(body: &[u8]) -> Result<Value, Value> {
    let error = |id: &Value, code: i64, message: String| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    let values = count_json_values(body);
    if values > MAX_JSON_VALUES {
        return Err(error(
            &top_level_id(body, false),
            -32600,
            format!("Invalid request: more than {MAX_JSON_VALUES} JSON values in one message"),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| error(&Value::Null, -32700, format!("Parse error: {e}")))?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let valid_id = matches!(id, Value::Null | Value::String(_))
        || id.as_i64().is_some()
        || value.get("id").is_none();
    let is_request = value.get("method").is_some_and(Value::is_string)
        && value
            .get("params")
            .is_none_or(|p| p.is_object() || p.is_array() || p.is_null());
    let is_response = value.get("id").is_some()
        && (value.get("result").is_some() || value.get("error").is_some());
    let well_formed =
        value.get("jsonrpc") == Some(&json!("2.0")) && valid_id && (is_request || is_response);
    // What tower-lsp's reader does with the frame: anything its types refuse (a
    // repeated key, say) would end the reader for good. The likelier type first, so
    // a keystroke's frame is decoded once more, not twice.
    let request: fn(&[u8]) -> bool = decodes_as::<jsonrpc::Request>;
    let response: fn(&[u8]) -> bool = decodes_as::<jsonrpc::Response>;
    let order = if is_request {
        [request, response]
    } else {
        [response, request]
    };
    let decodable = || order.iter().any(|decodes| decodes(body));
    if well_formed && decodable() {
        Ok(value)
    } else {
        let id = if valid_id { id } else { Value::Null };
        Err(error(
            &id,
            -32600,
            "Invalid request: not a JSON-RPC 2.0 message (a missing or repeated field, or a field of the wrong type)".into(),
        ))
    }
}

/// Requests that take no parameters. Clients differ in how they say "none":
/// Neovim's `client:request(method, {})` sends `{}`, which tower-lsp refuses for
/// such methods, so an empty object or array is taken out here.
const PARAMETERLESS_METHODS: [&str; 2] = [STATS_METHOD, "shutdown"];

/// `body` without its `params` if `message` (`body` parsed) is a parameterless
/// request whose params are empty; otherwise `body` unchanged.
fn without_empty_params(mut message: Value, body: Vec<u8>) -> Vec<u8> {
    let parameterless = message
        .get("method")
        .and_then(Value::as_str)
        .is_some_and(|m| PARAMETERLESS_METHODS.contains(&m));
    let empty = match message.get("params") {
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        _ => false,
    };
    match message.as_object_mut() {
        Some(fields) if parameterless && empty => {
            fields.remove("params");
            serde_json::to_vec(&message).unwrap_or(body)
        }
        _ => body,
    }
}

/// `body` with `settings: null` if `message` (`body` parsed) is a
/// `workspace/didChangeConfiguration` without settings (a client asking to be asked
/// for them), which tower-lsp's type of its params refuses; otherwise `body` unchanged.
fn with_settings_field(message: &Value, body: Vec<u8>) -> Vec<u8> {
    if message.get("method").and_then(Value::as_str) != Some("workspace/didChangeConfiguration") {
        return body;
    }
    let mut message = message.clone();
    let Some(fields) = message.as_object_mut() else {
        return body;
    };
    match fields.get_mut("params") {
        Some(Value::Object(params)) if !params.contains_key("settings") => {
            params.insert("settings".into(), Value::Null);
        }
        None | Some(Value::Null) => {
            fields.insert("params".into(), json!({"settings": null}));
        }
        _ => return body,
    }
    serde_json::to_vec(&message).unwrap_or(body)
}

/// Whether `body` deserializes as a `T`.
fn decodes_as<T: serde::de::DeserializeOwned>(body: &[u8]) -> bool {
    serde_json::from_slice::<T>(body).is_ok()
}

/// The `id` of the request whose body is `body` (with `cut`, only the start of it),
/// found without parsing the whole (a message refused for its size): only a
/// top-level `"id"` counts, only in a message with a top-level `"method"` (a
/// response's id is one of the client's own requests), and only a string or an
/// integer that ends before the bytes read do; `null` when they show none.
fn top_level_id(body: &[u8], cut: bool) -> Value {
    let mut id = Value::Null;
    let mut is_request = false;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0;
    // The last string closed at depth 1, while nothing but blanks followed it.
    let mut last_key: Option<&[u8]> = None;
    for (at, &byte) in body.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    last_key = (depth == 1).then(|| &body[string_start..at]);
                }
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                string_start = at + 1;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' if last_key == Some(b"method") => is_request = true,
            b':' if last_key == Some(b"id") => {
                let value = &body[at + 1..];
                let mut stream = serde_json::Deserializer::from_slice(value).into_iter::<Value>();
                id = match stream.next() {
                    // A number running to the end of a cut body may be cut too.
                    Some(Ok(number)) if number.is_i64() => {
                        let ends_inside = stream.byte_offset() < value.len();
                        if ends_inside || !cut {
                            number
                        } else {
                            Value::Null
                        }
                    }
                    Some(Ok(string)) if string.is_string() => string,
                    _ => Value::Null,
                };
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => {}
        }
        last_key = None;
    }
    if is_request { id } else { Value::Null }
}

/// An upper bound on the number of JSON values in `body`, counted without parsing:
/// every value is an element of a container (one separator or opening bracket
/// before it) or the top-level value.
fn count_json_values(body: &[u8]) -> usize {
    let mut count = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b',' | b'[' | b'{' | b':' => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// `frame` with a JSON-RPC error's message, or a `window/showMessage` or
/// `window/logMessage` text, cut to [`MAX_MESSAGE_BYTES`]: tower-lsp quotes whole
/// params in some errors (`Unexpected params: …`), and a warning about a setting
/// quotes its value.
fn cut_long_message(body: Vec<u8>) -> Vec<u8> {
    // Results are passed on unparsed; only a long error or message can need cutting.
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if body.len() <= MAX_MESSAGE_BYTES || !(has(b"\"error\":") || has(b"\"window/")) {
        return body;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let pointer = match value.get("method").and_then(Value::as_str) {
        Some("window/showMessage" | "window/logMessage") => "/params/message",
        Some(_) => return body,
        None => "/error/message",
    };
    let Some(message) = value.pointer_mut(pointer) else {
        return body;
    };
    let Some(text) = message.as_str().filter(|t| t.len() > MAX_MESSAGE_BYTES) else {
        return body;
    };
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    *message = Value::String(format!("{}… (cut)", &text[..end]));
    serde_json::to_vec(&value).unwrap_or(body)
}

/// Why the document notification `message` cannot be applied, if it cannot: its
/// params are not what the method takes. tower-lsp drops such a notification without
/// a word, and the server's copy of the document would then differ from the editor's.
fn unreadable_document_notification(message: &Value) -> Option<String> {
    use tower_lsp_server::ls_types::{
        DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    };
    fn refused<T: serde::de::DeserializeOwned>(params: &Value) -> Option<String> {
        // serde quotes a mistyped string whole: only its start is worth showing.
        T::deserialize(params)
            .err()
            .map(|e| e.to_string().chars().take(200).collect())
    }
    if message.get("id").is_some() {
        return None;
    }
    let method = message.get("method")?.as_str()?;
    let params = message.get("params").unwrap_or(&Value::Null);
    let error = match method {
        "textDocument/didOpen" => refused::<DidOpenTextDocumentParams>(params),
        "textDocument/didChange" => refused::<DidChangeTextDocumentParams>(params),
        "textDocument/didClose" => refused::<DidCloseTextDocumentParams>(params),
        _ => None,
    }?;
    let uri = params
        .pointer("/textDocument/uri")
        .and_then(Value::as_str)
        .map_or(String::new(), |uri| {
            format!(" of {}", uri.chars().take(200).collect::<String>())
        });
    Some(format!(
        "{method}{uri} not applied, its params are not valid ({error}): the document as inkling has it may differ from the editor's; close and reopen it"
    ))
}

async fn filter_input(
    mut input: impl AsyncBufRead + Unpin,
    mut server: impl AsyncWrite + Unpin,
    frames: mpsc::Sender<Vec<u8>>,
) {
    loop {
        let checked = match read_frame(&mut input, MAX_FRAME_BYTES).await {
            Ok(Some(Ok(body))) => parse_message(&body).and_then(|message| {
                if let Some(problem) = unreadable_document_notification(&message) {
                    // A notification has no answer: the user is told instead.
                    return Err(json!({
                        "jsonrpc": "2.0",
                        "method": "window/showMessage",
                        "params": {"type": 2, "message": format!("inkling: {problem}")},
                    }));
                }
                let body = with_settings_field(&message, body);
                Ok(without_empty_params(message, body))
            }),
            Ok(Some(Err(refusal))) => Err(json!({
                "jsonrpc": "2.0",
                "id": refusal.id,
                "error": {"code": -32600, "message": format!("Invalid request: {}", refusal.reason)},
            })),
            Ok(None) => break,
            Err(e) => {
                tracing::error!("cannot read from the client: {e}");
                break;
            }
        };
        match checked {
            Ok(body) => {
                if server.write_all(&frame(&body)).await.is_err() {
                    break;
                }
            }
            Err(response) => {
                tracing::warn!("refused a bad message: {response}");
                let response = cut_long_message(response.to_string().into_bytes());
                if !queue(&frames, frame(&response)).await {
                    break;
                }
            }
        }
    }
    // Dropping `server` closes tower-lsp's input: it sees end of file and stops.
}

/// Queues a frame for the client; waits while the queue is full, and gives up on a
/// client that has read nothing for [`STALLED_CLIENT`]: the process ends, since
/// such a client can neither be served nor be allowed to grow our memory.
async fn queue(frames: &mpsc::Sender<Vec<u8>>, frame: Vec<u8>) -> bool {
    match tokio::time::timeout(STALLED_CLIENT, frames.send(frame)).await {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            tracing::error!(
                "the client has read nothing for {} s while messages wait for it; exiting",
                STALLED_CLIENT.as_secs()
            );
            crate::exit_now(1);
        }
    }
}

/// Passes tower-lsp's frames on whole. Its frames are not limited in size: an
/// error reply that quotes a big request is cut here, never refused, since the
/// reader must not stop while tower-lsp still writes.
async fn forward_server_frames(
    mut server: impl AsyncBufRead + Unpin,
    frames: mpsc::Sender<Vec<u8>>,
) {
    while let Ok(Some(body)) = read_frame(&mut server, u64::MAX).await {
        let Ok(body) = body else { continue };
        if !queue(&frames, frame(&cut_long_message(body))).await {
            break;
        }
    }
}

async fn write_frames(mut frames: mpsc::Receiver<Vec<u8>>, mut output: impl AsyncWrite + Unpin) {
    while let Some(bytes) = frames.recv().await {
        if output.write_all(&bytes).await.is_err() || output.flush().await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_checked() {
        assert!(parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{}}"#).is_ok());
        assert!(parse_message(br#"{"jsonrpc":"2.0","method":"x"}"#).is_ok());
        assert!(parse_message(br#"{"jsonrpc":"2.0","id":"a","result":null}"#).is_ok());
        let parse = parse_message(b"{not json").unwrap_err();
        assert_eq!(parse["error"]["code"], -32700);
        assert_eq!(parse["id"], Value::Null);
        let invalid = parse_message(br#"{"jsonrpc":"2.0","id":7,"params":{}}"#).unwrap_err();
        assert_eq!(invalid["error"]["code"], -32600);
        assert_eq!(invalid["id"], 7);
        let bad_id = parse_message(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#).unwrap_err();
        assert_eq!(bad_id["id"], Value::Null);
        assert!(parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).is_err());
    }

    #[test]
    fn frames_tower_lsp_would_refuse_are_refused_here() {
        let repeated =
            br#"{"jsonrpc":"2.0","id":2,"method":"inkling/stats","method":"inkling/stats"}"#;
        let refused = parse_message(repeated).unwrap_err();
        assert_eq!(refused["error"]["code"], -32600);
        assert_eq!(refused["id"], 2);
        let repeated_id = br#"{"jsonrpc":"2.0","id":2,"id":3,"method":"x"}"#;
        assert_eq!(
            parse_message(repeated_id).unwrap_err()["error"]["code"],
            -32600
        );
        // A repeated key inside params is the handler's business, not the reader's.
        assert!(
            parse_message(br#"{"jsonrpc":"2.0","id":2,"method":"x","params":{"a":1,"a":2}}"#)
                .is_ok()
        );
    }

    #[test]
    fn messages_of_millions_of_values_are_refused_unparsed() {
        let mut body = br#"{"jsonrpc":"2.0","id":1,"method":"x","params":["#.to_vec();
        body.extend("0,".repeat(MAX_JSON_VALUES).as_bytes());
        body.extend(b"0]}");
        assert_eq!(parse_message(&body).unwrap_err()["error"]["code"], -32600);
        // A long string is one value.
        let text = "x,".repeat(MAX_JSON_VALUES);
        let open = json!({"jsonrpc": "2.0", "method": "x", "params": {"text": text}});
        assert!(parse_message(open.to_string().as_bytes()).is_ok());
        assert_eq!(count_json_values(br#"{"a":[1,2,"\\",{}]}"#), 8);
    }

    #[test]
    fn empty_params_of_parameterless_requests_are_dropped() {
        let stripped = |body: Vec<u8>| {
            let message = parse_message(&body).unwrap();
            without_empty_params(message, body)
        };
        let stats = |params: &str| {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"inkling/stats"{params}}}"#);
            serde_json::from_slice::<Value>(&stripped(body.into_bytes())).unwrap()
        };
        assert!(stats(r#","params":{}"#).get("params").is_none());
        assert!(stats(r#","params":[]"#).get("params").is_none());
        assert!(stats("").get("params").is_none());
        assert_eq!(stats(r#","params":{"a":1}"#)["params"]["a"], 1);
        let other = br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{}}"#.to_vec();
        assert_eq!(stripped(other.clone()), other);
    }

    #[test]
    fn configuration_changes_without_settings_get_null_settings() {
        let normalized = |params: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","method":"workspace/didChangeConfiguration"{params}}}"#
            )
            .into_bytes();
            let message = parse_message(&body).unwrap();
            serde_json::from_slice::<Value>(&with_settings_field(&message, body)).unwrap()
        };
        for missing in ["", r#","params":null"#, r#","params":{}"#] {
            let message = normalized(missing);
            assert_eq!(message["params"], json!({"settings": null}), "{missing}");
            assert!(decodes_as::<jsonrpc::Request>(
                message.to_string().as_bytes()
            ));
        }
        let given = normalized(r#","params":{"settings":{"inkling":{"maxTokens":1}}}"#);
        assert_eq!(given["params"]["settings"]["inkling"]["maxTokens"], 1);
        let other = br#"{"jsonrpc":"2.0","method":"x","params":{}}"#.to_vec();
        let message = parse_message(&other).unwrap();
        assert_eq!(with_settings_field(&message, other.clone()), other);
    }

    #[test]
    fn long_error_messages_are_cut() {
        let quoted = "y".repeat(100_000);
        let reply = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": format!("Unexpected params: {quoted}")}});
        let cut: Value =
            serde_json::from_slice(&cut_long_message(reply.to_string().into_bytes())).unwrap();
        let message = cut["error"]["message"].as_str().unwrap();
        assert!(message.len() < MAX_MESSAGE_BYTES + 16, "{}", message.len());
        assert!(message.starts_with("Unexpected params: yyy"));
        let small = json!({"jsonrpc": "2.0", "id": 1, "result": quoted})
            .to_string()
            .into_bytes();
        assert_eq!(cut_long_message(small.clone()), small);
        let shown = json!({"jsonrpc": "2.0", "method": "window/showMessage", "params": {"type": 2, "message": format!("`maxTokens` = \"{quoted}\"")}});
        let cut: Value =
            serde_json::from_slice(&cut_long_message(shown.to_string().into_bytes())).unwrap();
        let message = cut["params"]["message"].as_str().unwrap();
        assert!(message.len() < MAX_MESSAGE_BYTES + 16, "{}", message.len());
        assert_eq!(cut["method"], "window/showMessage");
    }

    /// The next frame's body, which must be there and within the limit.
    async fn next_body(reader: &mut (impl AsyncBufRead + Unpin)) -> Vec<u8> {
        read_frame(reader, MAX_FRAME_BYTES)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn frames_are_read_whole() {
        let bytes = b"Content-Length: 2\r\n\r\n{}}Content-Length: 3\r\nContent-Type: x\r\n\r\n[1]";
        let mut reader = BufReader::new(&bytes[..]);
        assert_eq!(next_body(&mut reader).await, b"{}");
        assert_eq!(next_body(&mut reader).await, b"[1]");
        assert!(
            read_frame(&mut reader, MAX_FRAME_BYTES)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_header_line_cut_between_its_cr_and_lf_does_not_end_the_headers() {
        // The line ends with "\r" exactly at the header-line limit; its "\n" is read
        // alone and must not count as the blank line that ends the headers.
        let padding = format!(
            "X-Padding: {}\r",
            "p".repeat(MAX_HEADER_BYTES as usize - 12)
        );
        assert_eq!(padding.len() as u64, MAX_HEADER_BYTES);
        let bytes = format!("Content-Length: 2\r\n{padding}\n\r\n{{}}");
        let mut reader = BufReader::new(bytes.as_bytes());
        assert_eq!(next_body(&mut reader).await, b"{}");
    }

    #[test]
    fn document_notifications_with_unreadable_params_are_named() {
        let change = |params: Value| json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": params});
        let good = change(json!({
            "textDocument": {"uri": "file:///a.py", "version": 2},
            "contentChanges": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}}, "text": "x"}],
        }));
        assert_eq!(unreadable_document_notification(&good), None);
        let negative = change(json!({
            "textDocument": {"uri": "file:///a.py", "version": 2},
            "contentChanges": [{"range": {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 1}}, "text": "x"}],
        }));
        let problem = unreadable_document_notification(&negative).expect("refused");
        assert!(
            problem.starts_with("textDocument/didChange of file:///a.py not applied"),
            "{problem}"
        );
        let open = json!({"jsonrpc": "2.0", "method": "textDocument/didOpen",
            "params": {"textDocument": {"uri": "file:///b.py", "languageId": 5, "version": 1, "text": ""}}});
        assert!(unreadable_document_notification(&open).is_some());
        // Requests get their own error from tower-lsp.
        let mut request = negative.clone();
        request["id"] = json!(1);
        assert_eq!(unreadable_document_notification(&request), None);
    }

    #[test]
    fn a_refused_message_keeps_its_top_level_id() {
        let id = |text: &str| top_level_id(text.as_bytes(), false);
        assert_eq!(id(r#"{"jsonrpc":"2.0","id":7,"method":"x"}"#), json!(7));
        assert_eq!(
            id(r#"{"method":"x","params":{"id":3,"a":[{"id":4}]}, "id" : "k"}"#),
            json!("k")
        );
        assert_eq!(id(r#"{"method":"x","params":{"id":3}}"#), Value::Null);
        // A string value "id" is no key; an object or a huge number is no id.
        assert_eq!(id(r#"{"method":"id","x":1}"#), Value::Null);
        assert_eq!(id(r#"{"method":"x","id":{"a":1}}"#), Value::Null);
        assert_eq!(
            id(r#"{"method":"x","id":18446744073709551615}"#),
            Value::Null
        );
        assert_eq!(id(r#"{"x":"a\"id\"","id":5,"method":"y"}"#), json!(5));
        // A response's id is the client's: no error may answer it.
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id":3,"result":[1,2]}"#),
            Value::Null
        );
        // Of a body cut short, a number at its very end may be cut too.
        let cut = |text: &str| top_level_id(text.as_bytes(), true);
        assert_eq!(cut(r#"{"method":"x","id":123"#), Value::Null);
        assert_eq!(cut(r#"{"method":"x","id":123,"params":{"#), json!(123));
        assert_eq!(cut(r#"{"id":"k","method":"x","params":"#), json!("k"));
    }

    #[tokio::test]
    async fn a_huge_frame_is_refused_with_its_id() {
        let mut bytes = format!("Content-Length: {}\r\n\r\n", MAX_FRAME_BYTES + 10).into_bytes();
        let start =
            br#"{"jsonrpc":"2.0","id":42,"method":"textDocument/inlineCompletion","params":{"x":""#;
        bytes.extend_from_slice(start);
        bytes.resize(
            bytes.len() + MAX_FRAME_BYTES as usize + 10 - start.len(),
            b' ',
        );
        bytes.extend(b"Content-Length: 2\r\n\r\n[]");
        let mut reader = BufReader::new(&bytes[..]);
        let refusal = read_frame(&mut reader, MAX_FRAME_BYTES)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(refusal.id, json!(42));
        assert_eq!(next_body(&mut reader).await, b"[]");
    }

    #[tokio::test]
    async fn a_length_in_any_case_is_read_and_one_that_is_no_length_is_refused() {
        let bytes = b"content-length: 2\r\n\r\n{}CONTENT-LENGTH: abc\r\n\r\n{\"x\":1}\r\nContent-Length: 2\r\n\r\n[]";
        let mut reader = BufReader::new(&bytes[..]);
        assert_eq!(next_body(&mut reader).await, b"{}");
        let refused = read_frame(&mut reader, MAX_FRAME_BYTES)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(refused.reason.contains("`abc`"), "{}", refused.reason);
        assert_eq!(next_body(&mut reader).await, b"[]");
    }

    #[tokio::test]
    async fn bad_header_bytes_and_huge_frames_are_survived() {
        let mut bytes = b"\xff\xfe junk\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        bytes.extend(format!("Content-Length: {}\r\n\r\n", MAX_FRAME_BYTES + 1).as_bytes());
        bytes.extend(vec![b' '; MAX_FRAME_BYTES as usize + 1]);
        bytes.extend(b"Content-Length: 2\r\n\r\n[]");
        let mut reader = BufReader::new(&bytes[..]);
        assert_eq!(next_body(&mut reader).await, b"{}");
        assert!(
            read_frame(&mut reader, MAX_FRAME_BYTES)
                .await
                .unwrap()
                .unwrap()
                .is_err()
        );
        assert_eq!(next_body(&mut reader).await, b"[]");
    }
}
