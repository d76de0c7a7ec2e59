//! No socket without the HTTP endpoint, loopback only with it: the real binary over
//! stdio with the real default model, a completion answered and the workspace
//! indexed, and the process's sockets listed from `/proc` — every `socket:[INODE]`
//! among its file descriptors (and its children's), looked up in the network
//! tables of its namespace.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use inkling_harness::http::post;
use inkling_harness::{Launch, LspClient, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The tables of `/proc/PID/net` that list sockets, and the column of their inode.
const TABLES: &[(&str, usize)] = &[
    ("tcp", 9),
    ("tcp6", 9),
    ("udp", 9),
    ("udp6", 9),
    ("udplite", 9),
    ("udplite6", 9),
    ("raw", 9),
    ("raw6", 9),
    ("unix", 6),
    ("netlink", 9),
    ("packet", 8),
];

/// Internet tables: what must not exist without the endpoint.
const INET: &[&str] = &[
    "tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6",
];

/// A socket of the process, as its table lists it.
#[derive(Clone, Debug)]
struct Socket {
    inode: u64,
    /// The table it is in (`tcp`, `unix`, …); `?` when in none.
    table: &'static str,
    /// Internet sockets: local and remote address, and the TCP state (`0A` listen,
    /// `01` established).
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    state: String,
    /// The table's line.
    line: String,
}

impl Socket {
    fn is_inet(&self) -> bool {
        INET.contains(&self.table)
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), as the kernel prints
/// them: each 32-bit word in host (little-endian) order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each 32-bit word is printed as the number its bytes make in host order.
    let bytes: Vec<u8> = (0..address.len() / 8)
        .map(|i| u32::from_str_radix(address.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?
        .into_iter()
        .flat_map(u32::to_ne_bytes)
        .collect();
    match bytes.len() {
        4 => Some(SocketAddr::from((
            Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]),
            port,
        ))),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(SocketAddr::from((Ipv6Addr::from(octets), port)))
        }
        _ => None,
    }
}

/// Every socket in the network tables `pid` sees, by inode.
fn socket_tables(pid: u32) -> HashMap<u64, Socket> {
    let mut sockets = HashMap::new();
    for &(table, inode_column) in TABLES {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(inode) = fields.get(inode_column).and_then(|f| f.parse().ok()) else {
                continue;
            };
            let inet = INET.contains(&table);
            sockets.insert(
                inode,
                Socket {
                    inode,
                    table,
                    local: inet.then(|| parse_address(fields[1])).flatten(),
                    remote: inet.then(|| parse_address(fields[2])).flatten(),
                    state: if inet {
                        fields[3].to_owned()
                    } else {
                        String::new()
                    },
                    line: line.trim().to_owned(),
                },
            );
        }
    }
    sockets
}

/// `pid` and its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", all[i]))
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default();
        for task in tasks {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all.sort();
    all.dedup();
    all
}

/// The sockets open in `pid` and its children (by their fd links), with what the
/// tables say about them. A socket not yet bound is in no table: such a sample is
/// taken again, for up to a second, before it is returned as it is.
fn sockets_of(pid: u32) -> Vec<(u32, Socket)> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let sample = sample_sockets(pid);
        if sample.iter().all(|(_, s)| s.table != "?") || Instant::now() > deadline {
            return sample;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sample_sockets(pid: u32) -> Vec<(u32, Socket)> {
    let mut found = Vec::new();
    for process in process_tree(pid) {
        let tables = socket_tables(process);
        let Ok(fds) = std::fs::read_dir(format!("/proc/{process}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let socket = tables.get(&inode).cloned().unwrap_or(Socket {
                inode,
                table: "?",
                local: None,
                remote: None,
                state: String::new(),
                line: format!(
                    "fd {} → {target}, in no table",
                    fd.file_name().to_string_lossy()
                ),
            });
            found.push((process, socket));
        }
    }
    found
}

fn describe(sockets: &[(u32, Socket)]) -> String {
    sockets
        .iter()
        .map(|(pid, s)| format!("pid {pid} {} inode {}: {}", s.table, s.inode, s.line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `shop` fixture, a small Python workspace to index.
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("shop")
}

/// Starts the server in the `shop` workspace, with `options`; samples its sockets
/// after `initialize`, once the model is ready, while a completion is generated
/// and after the workspace is indexed; returns the client and every sample.
fn exercised_server(launch: &Launch, options: Value) -> (LspClient, Vec<Vec<(u32, Socket)>>) {
    let mut client = LspClient::launch(launch);
    let pid = client.pid();
    let root = workspace();
    client.initialize_in(Some(&root), vscode_capabilities(), options);
    let mut samples = vec![sockets_of(pid)];
    client.wait_until_ready(LOAD_TIMEOUT);
    samples.push(sockets_of(pid));

    let text = std::fs::read_to_string(root.join("cart.py")).expect("read cart.py");
    let uri = format!("file://{}", root.join("cart.py").display());
    let text = format!("{text}\n    def count(self):\n        return ");
    client.open(&uri, "python", &text);
    let line = text.lines().count() as u32 - 1;
    let id = client.send_inline_completion(&uri, line, 15);
    samples.push(sockets_of(pid));
    let response = client.response(id, ANSWER_TIMEOUT);
    assert!(response.get("error").is_none(), "{response}");
    assert!(
        !inline_items(&response).is_empty(),
        "no completion answered: {response}"
    );

    // The background index of the workspace's two files.
    let deadline = Instant::now() + LOAD_TIMEOUT;
    while client.stats()["indexedFiles"].as_u64() < Some(2) {
        assert!(Instant::now() < deadline, "workspace not indexed");
        std::thread::sleep(Duration::from_millis(50));
    }
    samples.push(sockets_of(pid));
    for (n, sample) in samples.iter().enumerate() {
        eprintln!(
            "sockets, sample {n} ({}): {} open{}{}",
            [
                "after initialize",
                "model ready",
                "while completing",
                "workspace indexed"
            ][n],
            sample.len(),
            if sample.is_empty() { "" } else { "\n" },
            describe(sample)
        );
    }
    (client, samples)
}

#[test]
fn without_the_endpoint_the_server_has_no_socket() {
    let (client, samples) = exercised_server(&Launch::default(), Value::Null);
    for (n, sample) in samples.iter().enumerate() {
        let inet: Vec<_> = sample
            .iter()
            .filter(|(_, s)| s.is_inet())
            .cloned()
            .collect();
        assert!(
            inet.is_empty(),
            "sample {n}: internet sockets without the endpoint:\n{}",
            describe(&inet)
        );
        // No unix, netlink or unknown sockets either: there is nothing to explain.
        assert!(
            sample.is_empty(),
            "sample {n}: sockets without the endpoint:\n{}",
            describe(sample)
        );
    }
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

/// With the endpoint: one listener on 127.0.0.1, and connections to it are from
/// and to 127.0.0.1; nothing else.
fn assert_loopback_only(launch: Launch, options: Value) {
    let (mut client, samples) = exercised_server(&launch, options);
    let pid = client.pid();
    for (n, sample) in samples.iter().enumerate() {
        // Only the listener: after `initialize` it may not be bound yet (that
        // happens on `initialized`); from the model's readiness on it is.
        let listeners = sample.iter().filter(|(_, s)| s.state == "0A").count();
        assert!(
            listeners == 1 || (n == 0 && listeners == 0),
            "sample {n}: one listener expected:\n{}",
            describe(sample)
        );
        assert!(
            sample.iter().all(|(_, s)| s.table == "tcp"
                && s.state == "0A"
                && s.local.is_some_and(|a| a.ip() == Ipv4Addr::LOCALHOST)),
            "sample {n}: sockets other than a listener on 127.0.0.1:\n{}",
            describe(sample)
        );
    }
    let listening = samples[1]
        .iter()
        .find(|(_, s)| s.state == "0A")
        .and_then(|(_, s)| s.local)
        .expect("a listening address");
    assert_eq!(listening.ip(), Ipv4Addr::LOCALHOST, "{listening}");
    assert_ne!(listening.port(), 0);

    // A connection held open (the server closes it if it sends no request within
    // seconds, so it is looked at at once): the server's end of it is on loopback
    // at both ends.
    let held = TcpStream::connect(listening).expect("connect to the endpoint");
    let deadline = Instant::now() + Duration::from_secs(3);
    let sample = loop {
        let sample = sockets_of(pid);
        // The connection shows up once the server has accepted it.
        if sample.iter().any(|(_, s)| s.state == "01") || Instant::now() > deadline {
            break sample;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let established: Vec<_> = sample.iter().filter(|(_, s)| s.state == "01").collect();
    assert!(
        !established.is_empty(),
        "the held connection is not among the server's sockets:\n{}",
        describe(&sample)
    );
    for (_, socket) in &sample {
        assert_eq!(socket.table, "tcp", "{}", describe(&sample));
        let local = socket.local.expect("a local address");
        assert_eq!(local.ip(), Ipv4Addr::LOCALHOST, "{}", describe(&sample));
        if socket.state == "0A" {
            assert_eq!(local, listening);
        } else {
            assert_eq!(local.port(), listening.port(), "{}", describe(&sample));
            let remote = socket.remote.expect("a remote address");
            assert_eq!(remote.ip(), Ipv4Addr::LOCALHOST, "{}", describe(&sample));
        }
    }
    drop(held);
    // The endpoint answers, and still nothing else is open.
    let answer = post(
        listening,
        "/infill",
        &json!({"input_prefix": "def square(x):\n    return ", "input_suffix": "\n", "n_predict": 16})
            .to_string(),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    let after = sockets_of(pid);
    assert!(
        after.iter().all(|(_, s)| s.table == "tcp"
            && s.local.is_some_and(|a| a.ip() == Ipv4Addr::LOCALHOST)
            && (s.state == "0A" || s.remote.is_some_and(|a| a.ip() == Ipv4Addr::LOCALHOST))),
        "{}",
        describe(&after)
    );
    // The LSP side still serves.
    let stats = client.stats();
    assert_eq!(stats["modelState"], "ready", "{stats}");
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn with_http_port_in_the_options_only_loopback_sockets() {
    assert_loopback_only(Launch::default(), json!({"httpPort": 0}));
}

#[test]
fn with_the_http_port_flag_only_loopback_sockets() {
    assert_loopback_only(
        Launch {
            args: vec!["--http-port".into(), "0".into()],
            ..Launch::default()
        },
        Value::Null,
    );
}

#[test]
fn kernel_addresses_are_decoded() {
    assert_eq!(
        parse_address("0100007F:1F90"),
        Some("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(
        parse_address("00000000000000000000000001000000:0050"),
        Some("[::1]:80".parse().unwrap())
    );
    assert_eq!(
        parse_address("00000000000000000000000000000000:0000"),
        Some("[::]:0".parse().unwrap())
    );
}
