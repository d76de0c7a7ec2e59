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

/// Most bytes in one message body; a larger declared length is refused.
const MAX_FRAME_BYTES: usize = 64 << 20;

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
    let (errors, error_frames) = mpsc::unbounded_channel();
    tokio::spawn(filter_input(BufReader::new(input), guard_out, errors));
    tokio::spawn(merge_output(BufReader::new(guard_in), error_frames, output));
    Server::new(server_in, server_out, socket)
        // Completions wait on one engine; let edits and cancels through meanwhile.
        .concurrency_level(64)
        .serve(service)
        .await;
}

/// Reads one frame's body; `Ok(None)` at a clean end of stream.
async fn read_frame(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
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
                .parse::<usize>()
                .ok();
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_FRAME_BYTES {
        return Err(std::io::Error::other(format!("frame of {length} bytes")));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
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
    errors: mpsc::UnboundedSender<Vec<u8>>,
) {
    loop {
        let body = match read_frame(&mut input).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(e) => {
                tracing::error!("cannot read from the client: {e}");
                break;
            }
        };
        match check_message(&body) {
            Ok(()) => {
                if server.write_all(&frame(&body)).await.is_err() {
                    break;
                }
            }
            Err(response) => {
                tracing::warn!("refused a bad message: {response}");
                let _ = errors.send(frame(response.to_string().as_bytes()));
            }
        }
    }
    // Dropping `server` closes tower-lsp's input: it sees end of file and stops.
}

async fn merge_output(
    mut server: impl AsyncBufRead + Unpin,
    mut errors: mpsc::UnboundedReceiver<Vec<u8>>,
    mut output: impl AsyncWrite + Unpin,
) {
    loop {
        let bytes = tokio::select! {
            body = read_frame(&mut server) => match body {
                Ok(Some(body)) => frame(&body),
                _ => break,
            },
            Some(error) = errors.recv() => error,
        };
        if output.write_all(&bytes).await.is_err() || output.flush().await.is_err() {
            break;
        }
    }
    let _ = output.flush().await;
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
        assert_eq!(read_frame(&mut reader).await.unwrap().unwrap(), b"{}");
        assert_eq!(read_frame(&mut reader).await.unwrap().unwrap(), b"[1]");
        assert!(read_frame(&mut reader).await.unwrap().is_none());
    }
}
