//! The stdio transport around `tower-lsp-server`, hardened against bad frames.
//!
//! tower-lsp-server stops reading for good after one frame it cannot decode
//! (malformed JSON, or JSON that is not a JSON-RPC message), which would end the
//! whole server. So frames pass through a guard first: each is parsed here, good
//! ones are forwarded to tower-lsp unchanged, and a bad one is answered with a
//! JSON-RPC error (-32700 parse error or -32600 invalid request) written between
//! tower-lsp's own frames, never inside one.

use serde_json::{Value, json};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::sync::mpsc;
use tower_lsp_server::{ClientSocket, LspService, Server};

use crate::lsp::Backend;

/// Most bytes in one message body; a larger message is skipped and refused.
const MAX_FRAME_BYTES: u64 = 64 << 20;
/// Most bytes read as one header line.
const MAX_HEADER_BYTES: u64 = 8 << 10;

/// Serves `service` with messages read from `input` and written to `output` until
/// the client sends `exit` or closes `input`.
pub async fn serve(
    input: impl AsyncRead + Unpin + Send + 'static,
    output: impl AsyncWrite + Unpin + Send + 'static,
    service: LspService<Backend>,
    socket: ClientSocket,
) {
    let (server_in, guard_out) = tokio::io::duplex(1 << 16);
    let (server_out, guard_in) = tokio::io::duplex(1 << 16);
    // Whole frames only, from tower-lsp and from the guard, go through one channel to
    // one writer, so no frame is ever split or lost.
    let (frames, outgoing) = mpsc::unbounded_channel();
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
type FrameBody = Result<Vec<u8>, String>;

/// Reads one frame; `Ok(None)` at a clean end of stream.
async fn read_frame(
    reader: &mut (impl AsyncBufRead + Unpin),
) -> std::io::Result<Option<FrameBody>> {
    let mut length = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        // A header line is short; a longer one is cut and read as several.
        if (&mut *reader)
            .take(MAX_HEADER_BYTES)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Ok(None);
        }
        let header = String::from_utf8_lossy(&line);
        let header = header.trim_end();
        if header.is_empty() {
            if length.is_some() {
                break;
            }
            continue; // Blank lines between frames are tolerated.
        }
        // Found anywhere in the line, so stray bytes before a header resynchronise.
        if let Some(at) = header.find("Content-Length:") {
            length = header[at + "Content-Length:".len()..]
                .trim()
                .parse::<u64>()
                .ok();
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_FRAME_BYTES {
        tokio::io::copy(&mut (&mut *reader).take(length), &mut tokio::io::sink()).await?;
        return Ok(Some(Err(format!(
            "message of {length} bytes is over the limit of {MAX_FRAME_BYTES}"
        ))));
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

/// Why a frame is not a JSON-RPC message, as the error response to send back.
fn check_message(body: &[u8]) -> Result<(), Value> {
    let error = |id: &Value, code: i64, message: String| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
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
    if value.get("jsonrpc") == Some(&json!("2.0")) && valid_id && (is_request || is_response) {
        Ok(())
    } else {
        let id = if valid_id { id } else { Value::Null };
        Err(error(
            &id,
            -32600,
            "Invalid request: not a JSON-RPC 2.0 message".into(),
        ))
    }
}

async fn filter_input(
    mut input: impl AsyncBufRead + Unpin,
    mut server: impl AsyncWrite + Unpin,
    frames: mpsc::UnboundedSender<Vec<u8>>,
) {
    loop {
        let checked = match read_frame(&mut input).await {
            Ok(Some(Ok(body))) => check_message(&body).map(|()| body),
            Ok(Some(Err(refusal))) => Err(json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32600, "message": format!("Invalid request: {refusal}")},
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
                let _ = frames.send(frame(response.to_string().as_bytes()));
            }
        }
    }
    // Dropping `server` closes tower-lsp's input: it sees end of file and stops.
}

/// Passes tower-lsp's frames on whole.
async fn forward_server_frames(
    mut server: impl AsyncBufRead + Unpin,
    frames: mpsc::UnboundedSender<Vec<u8>>,
) {
    while let Ok(Some(Ok(body))) = read_frame(&mut server).await {
        if frames.send(frame(&body)).is_err() {
            break;
        }
    }
}

async fn write_frames(
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    mut output: impl AsyncWrite + Unpin,
) {
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
        assert!(check_message(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{}}"#).is_ok());
        assert!(check_message(br#"{"jsonrpc":"2.0","method":"x"}"#).is_ok());
        assert!(check_message(br#"{"jsonrpc":"2.0","id":"a","result":null}"#).is_ok());
        let parse = check_message(b"{not json").unwrap_err();
        assert_eq!(parse["error"]["code"], -32700);
        assert_eq!(parse["id"], Value::Null);
        let invalid = check_message(br#"{"jsonrpc":"2.0","id":7,"params":{}}"#).unwrap_err();
        assert_eq!(invalid["error"]["code"], -32600);
        assert_eq!(invalid["id"], 7);
        let bad_id = check_message(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#).unwrap_err();
        assert_eq!(bad_id["id"], Value::Null);
        assert!(check_message(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).is_err());
    }

    #[tokio::test]
    async fn frames_are_read_whole() {
        let bytes = b"Content-Length: 2\r\n\r\n{}}Content-Length: 3\r\nContent-Type: x\r\n\r\n[1]";
        let mut reader = BufReader::new(&bytes[..]);
        assert_eq!(
            read_frame(&mut reader).await.unwrap().unwrap().unwrap(),
            b"{}"
        );
        assert_eq!(
            read_frame(&mut reader).await.unwrap().unwrap().unwrap(),
            b"[1]"
        );
        assert!(read_frame(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_header_bytes_and_huge_frames_are_survived() {
        let mut bytes = b"\xff\xfe junk\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        bytes.extend(format!("Content-Length: {}\r\n\r\n", MAX_FRAME_BYTES + 1).as_bytes());
        bytes.extend(vec![b' '; MAX_FRAME_BYTES as usize + 1]);
        bytes.extend(b"Content-Length: 2\r\n\r\n[]");
        let mut reader = BufReader::new(&bytes[..]);
        assert_eq!(
            read_frame(&mut reader).await.unwrap().unwrap().unwrap(),
            b"{}"
        );
        assert!(read_frame(&mut reader).await.unwrap().unwrap().is_err());
        assert_eq!(
            read_frame(&mut reader).await.unwrap().unwrap().unwrap(),
            b"[]"
        );
    }
}
