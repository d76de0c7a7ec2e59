//! A fault-injecting HTTP server on loopback, standing in for a remote engine that
//! misbehaves: it stalls, dies mid-stream, sends garbage or truncated server-sent
//! events, answers 500 — or answers well, in llama.cpp's `/infill` stream shape.
//! It counts the requests it received, so a test can prove none was sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does with the next requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers `text` as a llama.cpp `/infill` stream, after `delay`.
    Answer {
        /// Time before the response.
        delay: Duration,
        /// The text, sent in two events and a final one.
        text: String,
    },
    /// Reads the request and never answers.
    Stall,
    /// Sends one event, then closes the connection.
    DieMidStream,
    /// Answers 200 with events that are not JSON.
    Garbage,
    /// Sends events but closes before the final one.
    Truncated,
    /// Answers this status.
    Status(u16),
}

/// The running server; it stops accepting when dropped.
pub struct FaultServer {
    /// Where it listens.
    pub address: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
}

impl FaultServer {
    /// Starts the server on 127.0.0.1, doing `fault`.
    pub fn start(fault: Fault) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let fault = Arc::new(Mutex::new(fault));
        let requests = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let (f, r, s) = (fault.clone(), requests.clone(), stopped.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (f, r) = (f.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &f, &r));
            }
        });
        FaultServer {
            address,
            fault,
            requests,
            stopped,
        }
    }

    /// The base URL to configure as the remote.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Does `fault` from the next request on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}

/// Reads one request (headers and a `Content-Length` body).
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return Some(text);
            }
        }
    }
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn event(content: &str, stop: bool) -> String {
    let data = serde_json::json!({"content": content, "stop": stop});
    format!("data: {data}\n\n")
}

fn serve(mut stream: TcpStream, fault: &Mutex<Fault>, requests: &AtomicUsize) {
    if read_request(&mut stream).is_none() {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let fault = fault.lock().unwrap().clone();
    let mut write = |text: &str| {
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.flush();
    };
    match fault {
        Fault::Answer { delay, text } => {
            std::thread::sleep(delay);
            let half = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            write(SSE_HEAD);
            write(&event(&text[..half], false));
            write(&event(&text[half..], false));
            write(&event("", true));
        }
        Fault::Stall => std::thread::sleep(Duration::from_secs(30)),
        Fault::DieMidStream => {
            write(SSE_HEAD);
            write(&event("partial", false));
        }
        Fault::Garbage => {
            write(SSE_HEAD);
            write("data: <html><body>502 Bad Gateway</body></html>\n\n");
        }
        Fault::Truncated => {
            write(SSE_HEAD);
            write(&event("half an", false));
            write("data: {\"content\": \"swer");
        }
        Fault::Status(status) => {
            let body = "{\"error\": {\"message\": \"injected\"}}";
            write(&format!(
                "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ));
        }
    }
}
