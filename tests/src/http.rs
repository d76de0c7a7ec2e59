//! A minimal HTTP/1.1 client and a launcher for `inkling http`, for the endpoint's
//! end-to-end tests: real sockets, real requests, nothing mocked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::inkling_binary;

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body, parsed as JSON (`Null` when it is not JSON).
    pub json: Value,
}

/// Sends `POST path` with `body` (sent as is, so tests can send malformed JSON) and
/// reads the whole response; the connection is closed after it.
pub fn post(address: SocketAddr, path: &str, body: &str) -> HttpResponse {
    post_with(address, path, "", body)
}

/// [`post`] with more header lines (each ending in `\r\n`), as a browser adds.
pub fn post_with(address: SocketAddr, path: &str, headers: &str, body: &str) -> HttpResponse {
    let (status, body) = try_post_with(address, path, headers, body).expect("POST");
    HttpResponse {
        status,
        json: serde_json::from_str(&body).unwrap_or(Value::Null),
    }
}

/// [`post`] for a server that may not be listening (yet): the status code and the
/// body's text, or the error.
pub fn try_post(address: SocketAddr, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    try_post_with(address, path, "", body)
}

fn try_post_with(
    address: SocketAddr,
    path: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let invalid = |what| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no header block"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    Ok((status, body.to_owned()))
}

/// Sends `POST path` with `body` and reads the response's status line and headers;
/// the body (a stream's events, in chunks) is left to read from the reader returned.
pub fn open_stream(address: SocketAddr, path: &str, body: &str) -> (u16, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("read timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    while line != "\r\n" {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("a header") > 0,
            "no body"
        );
    }
    (status, reader)
}

/// Reads a body opened by [`open_stream`] until its first line with something in it
/// (an event, or a comment while the prompt is decoded): the request is at the engine.
pub fn first_body_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("a body line") > 0,
            "the body ended"
        );
        if line.starts_with(':') || line.starts_with("data:") {
            return line;
        }
    }
}

/// Python source whose prompt a cold engine takes seconds to decode: a request for it
/// stays at the engine for a while (with no prompt time limit).
pub fn slow_prefix() -> String {
    (0..60)
        .map(|i| {
            format!(
                "def scale_{i}(values, factor):\n    return [v * factor + {i} for v in values]\n\n"
            )
        })
        .collect::<String>()
        + "def main():\n    "
}

/// A running `inkling http` process; killed when dropped.
pub struct HttpServer {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl HttpServer {
    /// Starts `inkling http --port 0 ARGS…` and waits until it listens and its model
    /// is ready (both are logged on stderr, which is passed on to ours).
    pub fn start(args: &[&str]) -> HttpServer {
        HttpServer::start_with(&[], args)
    }

    /// [`HttpServer::start`] with the server's options `flags` before the command
    /// (`inkling FLAGS… http --port 0 ARGS…`: options `http` does not take itself).
    pub fn start_with(flags: &[&str], args: &[&str]) -> HttpServer {
        let mut child = Command::new(inkling_binary())
            .args(flags)
            .args(["http", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn inkling http");
        let stderr = child.stderr.take().expect("stderr");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let _ = lines.send(line);
            }
        });
        let mut address = None;
        let mut ready = false;
        while address.is_none() || !ready {
            let line = received
                .recv_timeout(Duration::from_secs(120))
                .expect("inkling http did not get ready");
            if let Some((_, rest)) = line.split_once("listening on http://") {
                address = rest.trim().parse().ok();
            }
            ready |= line.contains("model ready");
            assert!(!line.contains("ERROR"), "inkling http failed: {line}");
        }
        HttpServer {
            child,
            address: address.expect("an address"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `POST path` with `body` to this server.
    pub fn post(&self, path: &str, body: &str) -> HttpResponse {
        post(self.address, path, body)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
