//! llama.cpp's `llama-server`, the peer the benchmarks run side by side with inkling
//! on the same model.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inkling_harness::http::try_post;
use serde_json::Value;

/// A running llama-server; killed when dropped.
pub struct LlamaServer {
    child: Child,
    pub address: SocketAddr,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The llama-server binary: `$INKLING_LLAMA_SERVER`, else `scripts/llama-server`'s
/// (built on first use, about 7 minutes).
pub fn llama_server_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("INKLING_LLAMA_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/llama-server");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", script.display(), output.status));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// The version line `binary --version` prints (empty if it prints none).
pub fn llama_server_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| l.starts_with("version"))
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

impl LlamaServer {
    /// The flags it runs with, as llama.vim's README recommends for one user.
    pub const FLAGS: &[&str] = &[
        "-t",
        "2",
        "-c",
        "4096",
        "-np",
        "1",
        "--cache-reuse",
        "256",
        "--swa-full",
    ];

    /// Starts `binary` on `model` and waits until the model is loaded; its log goes
    /// to `log`.
    pub fn start(binary: &Path, model: &str, log: &Path) -> Result<LlamaServer, String> {
        let port = free_port();
        let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args(["-m", model])
            .args(Self::FLAGS)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = LlamaServer {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "llama-server exited ({status}); see {}",
                    log.display()
                ));
            }
            // 503 while the model loads, 200 once it is ready.
            if let Ok((200, _)) = try_post(server.address, "/tokenize", r#"{"content":"x"}"#) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "llama-server not ready in 300 s; see {}",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `POST /tokenize` with `body`: the tokens.
pub fn tokenize(address: SocketAddr, body: &Value) -> Result<Vec<i64>, String> {
    match try_post(address, "/tokenize", &body.to_string()) {
        Ok((200, answer)) => serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| serde_json::from_value(v["tokens"].clone()).ok())
            .ok_or_else(|| format!("/tokenize answered {answer}")),
        Ok((status, answer)) => Err(format!("/tokenize answered {status}: {answer}")),
        Err(e) => Err(format!("/tokenize: {e}")),
    }
}
