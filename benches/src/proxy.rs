//! A delaying, failing HTTP/1.1 forwarder on loopback: stands between an inkling and
//! its remote engine to play the network. Each request is read whole (head and
//! `Content-Length` body), held for the delay, then either forwarded to the upstream
//! server or failed (a 500 answer, or the connection dropped) for a deterministic
//! pseudo-random share of requests. Responses are relayed byte by byte as they come
//! (server-sent events stream through, nothing is buffered) on the same kept-alive
//! connections the client pooled; when the client hangs up, so does the upstream.
//!
//! The whole delay is put before forwarding the request: every byte of the response
//! then arrives that much later, as over a network whose round trip is the delay.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the proxy does to requests.
#[derive(Clone, Copy, Debug)]
pub struct Network {
    /// The round trip added to each request.
    pub delay: Duration,
    /// The percentage (0–100) of requests failed, half of them with a 500 answer and
    /// half by dropping the connection.
    pub failing_percent: u64,
    /// Seeds which requests fail: the `n`th request fails iff a hash of
    /// (`seed`, `n`) says so, whatever the timing.
    pub seed: u64,
}

/// How many requests the proxy saw and what it did with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests received.
    pub requests: u64,
    /// Requests answered 500 by the proxy.
    pub failed_500: u64,
    /// Requests whose connection the proxy dropped.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    failed_500: AtomicU64,
    dropped: AtomicU64,
}

/// The running proxy; it stops accepting when dropped.
pub struct Proxy {
    /// Where it listens.
    pub address: SocketAddr,
    counters: Arc<Counters>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    /// Forwards to `upstream` through `network`, listening on 127.0.0.1.
    pub fn start(upstream: SocketAddr, network: Network) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let counters = Arc::new(Counters::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stopped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let c = c.clone();
                std::thread::spawn(move || serve(client, upstream, network, &c));
            }
        });
        Proxy {
            address,
            counters,
            stopped,
        }
    }

    /// The base URL to give as the remote's.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What it did so far.
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.counters.requests.load(Ordering::SeqCst),
            failed_500: self.counters.failed_500.load(Ordering::SeqCst),
            dropped: self.counters.dropped.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}

/// SplitMix64: a well-mixed hash of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What becomes of one request.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Forward,
    Fail500,
    Drop,
}

impl Network {
    /// The fate of the `n`th request (0-based).
    fn fate(&self, n: u64) -> Fate {
        let hash = mix(self.seed ^ mix(n));
        if hash % 100 >= self.failing_percent {
            Fate::Forward
        } else if (hash >> 32) & 1 == 0 {
            Fate::Fail500
        } else {
            Fate::Drop
        }
    }
}

/// Reads one request (head and `Content-Length` body) from `stream`; `pending` keeps
/// what was read beyond it. `None` when the client hung up.
fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut buffer = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            assert!(
                !head.contains("transfer-encoding"),
                "the proxy reads Content-Length bodies only"
            );
            let length = head
                .lines()
                .filter_map(|l| l.strip_prefix("content-length:"))
                .find_map(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + length {
                return Some(pending.drain(..end + 4 + length).collect());
            }
        }
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buffer[..n]);
    }
}

/// The proxy's own 500 answer.
fn failed() -> String {
    let body = r#"{"error": {"message": "injected by the proxy"}}"#;
    format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves one client connection: its requests one after another, each answered
/// through one upstream connection kept as long as the client's.
fn serve(mut client: TcpStream, upstream: SocketAddr, network: Network, counters: &Counters) {
    // Small server-sent events must not wait for Nagle's algorithm.
    let _ = client.set_nodelay(true);
    let mut pending = Vec::new();
    let mut forward: Option<TcpStream> = None;
    while let Some(request) = read_request(&mut client, &mut pending) {
        let n = counters.requests.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(network.delay);
        match network.fate(n) {
            Fate::Forward => {}
            Fate::Fail500 => {
                counters.failed_500.fetch_add(1, Ordering::SeqCst);
                let _ = client.write_all(failed().as_bytes());
                break;
            }
            Fate::Drop => {
                counters.dropped.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        if forward.is_none() {
            let Ok(stream) = TcpStream::connect(upstream) else {
                break;
            };
            let _ = stream.set_nodelay(true);
            // The response, relayed as it comes, until either side closes.
            let (mut from, mut to) = (
                stream.try_clone().expect("clone"),
                client.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Both);
            });
            forward = Some(stream);
        }
        let sent = forward
            .as_mut()
            .is_some_and(|stream| stream.write_all(&request).is_ok());
        if !sent {
            break;
        }
    }
    if let Some(stream) = forward {
        let _ = stream.shutdown(Shutdown::Both);
    }
    let _ = client.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use inkling_harness::fault::{Fault, FaultServer};
    use inkling_harness::http::try_post;

    use super::*;

    #[test]
    fn the_failing_share_is_close_to_the_percentage_and_fixed_by_the_seed() {
        let network = Network {
            delay: Duration::ZERO,
            failing_percent: 20,
            seed: 7,
        };
        let fates: Vec<Fate> = (0..1000).map(|n| network.fate(n)).collect();
        let failed = fates.iter().filter(|f| **f != Fate::Forward).count();
        assert!((170..=230).contains(&failed), "{failed}");
        assert!(fates.contains(&Fate::Fail500) && fates.contains(&Fate::Drop));
        assert_eq!(
            fates,
            (0..1000).map(|n| network.fate(n)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn requests_are_delayed_and_streamed_through_or_failed() {
        let upstream = FaultServer::start(Fault::Answer {
            delay: Duration::ZERO,
            text: "fibonacci(n - 1)".into(),
        });
        let delay = Duration::from_millis(50);
        let proxy = Proxy::start(
            upstream.address,
            Network {
                delay,
                failing_percent: 0,
                seed: 1,
            },
        );
        let started = Instant::now();
        let (status, body) = try_post(proxy.address, "/infill", "{}").expect("forwarded");
        assert!(started.elapsed() >= delay);
        assert_eq!(status, 200);
        assert!(
            body.contains("\"fibonacc\"") && body.contains("\"stop\":true"),
            "{body}"
        );

        let failing = Proxy::start(
            upstream.address,
            Network {
                delay,
                failing_percent: 100,
                seed: 1,
            },
        );
        for _ in 0..8 {
            if let Ok((status, _)) = try_post(failing.address, "/infill", "{}") {
                assert_eq!(status, 500);
            }
        }
        let counts = failing.counts();
        assert_eq!(counts.requests, 8);
        assert!(counts.failed_500 > 0 && counts.dropped > 0, "{counts:?}");
        assert_eq!(upstream.requests(), 1);
    }
}
