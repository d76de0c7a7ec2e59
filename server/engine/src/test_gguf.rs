//! Test support: small GGUF files written from scratch (metadata only, no tensors),
//! loaded through llama.cpp as vocabulary-only models.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;

/// A GGUF metadata value.
pub enum GgufValue {
    Bool(bool),
    U32(u32),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    /// Any other value: its type code and its bytes as the file has them.
    Raw(u32, Vec<u8>),
}

/// A GGUF (version 3) file with metadata `kvs` and no tensors.
pub fn gguf_bytes(kvs: &[(&str, GgufValue)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        string(&mut out, key);
        match value {
            GgufValue::Bool(b) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*b));
            }
            GgufValue::U32(n) => {
                out.extend(4u32.to_le_bytes());
                out.extend(n.to_le_bytes());
            }
            GgufValue::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            GgufValue::Strs(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    string(&mut out, item);
                }
            }
            GgufValue::I32s(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    out.extend(item.to_le_bytes());
                }
            }
            GgufValue::Raw(kind, bytes) => {
                out.extend(kind.to_le_bytes());
                out.extend(bytes);
            }
        }
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out
}

/// GPT-2's printable spelling of each byte, in byte order: token `b` is byte `b`.
fn byte_tokens() -> Vec<String> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap().to_string()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap().to_string()
            }
        })
        .collect()
}

/// A vocabulary-only GGUF: the 256 byte tokens, then `specials` (ids 256, 257, …)
/// as control tokens; the first special is BOS when `add_bos`.
pub fn vocab_file(name: &str, specials: &[&str], add_bos: bool) -> PathBuf {
    vocab_file_of("llama", name, specials, add_bos)
}

/// [`vocab_file`] for the model architecture `architecture` (`general.architecture`).
pub fn vocab_file_of(architecture: &str, name: &str, specials: &[&str], add_bos: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inkling-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    let mut tokens = byte_tokens();
    tokens.extend(specials.iter().map(|s| s.to_string()));
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if i < 256 { 1 } else { 3 })
        .collect();
    let kvs = [
        ("general.architecture", GgufValue::Str(architecture.into())),
        ("tokenizer.ggml.model", GgufValue::Str("gpt2".into())),
        ("tokenizer.ggml.pre", GgufValue::Str("default".into())),
        ("tokenizer.ggml.tokens", GgufValue::Strs(tokens)),
        ("tokenizer.ggml.token_type", GgufValue::I32s(types)),
        ("tokenizer.ggml.merges", GgufValue::Strs(Vec::new())),
        ("tokenizer.ggml.bos_token_id", GgufValue::U32(256)),
        ("tokenizer.ggml.eos_token_id", GgufValue::U32(257)),
        ("tokenizer.ggml.add_bos_token", GgufValue::Bool(add_bos)),
    ];
    std::fs::write(&path, gguf_bytes(&kvs)).unwrap();
    path
}

pub fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        llama_cpp_2::send_logs_to_tracing(
            llama_cpp_2::LogOptions::default().with_logs_enabled(false),
        );
        LlamaBackend::init().expect("llama backend")
    })
}

pub fn load(path: &Path) -> LlamaModel {
    let params = LlamaModelParams::default().with_vocab_only(true);
    LlamaModel::load_from_file(backend(), path, &params).expect("vocabulary-only model loads")
}
