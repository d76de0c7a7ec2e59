//! Hostile and corrupt model files, through the real binary over LSP: whatever a model
//! file holds, the server stays up, keeps its documents, and says what is wrong in
//! words a person understands (never llama-cpp-2's "null result from llama cpp").
//!
//! Each variant is a copy of the real default model (Gemma-3-270M) with a few bytes
//! patched, or cut short: header and metadata bytes flipped, each hyperparameter
//! llama.cpp asserts on out of range (llama.cpp would abort the whole process on
//! several of them, which the child-process model check catches), counts that do not
//! fit the file, tensor entries pointing outside it, NaN and infinite weights. The
//! GGUF layout is parsed here to find the offsets.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inkling_harness::{Launch, LspClient, default_model_path, inline_items, vscode_capabilities};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(120);

// GGUF metadata value types.
const UINT8: u32 = 0;
const INT8: u32 = 1;
const UINT16: u32 = 2;
const INT16: u32 = 3;
const UINT32: u32 = 4;
const INT32: u32 = 5;
const FLOAT32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const UINT64: u32 = 10;
const INT64: u32 = 11;
const FLOAT64: u32 = 12;

/// Where a metadata entry is in the file.
#[derive(Clone, Debug)]
struct Entry {
    /// The key's length field (u64), followed by the key.
    key_at: usize,
    /// The value type field (u32).
    type_at: usize,
    value_type: u32,
    /// The value (for arrays: the element type field, then the length, then elements).
    value_at: usize,
}

/// Where a tensor's description is in the file.
#[derive(Clone, Debug)]
struct Tensor {
    /// The dimensions (u64 each).
    dims_at: usize,
    dims: Vec<u64>,
    /// The ggml type field (u32).
    type_at: usize,
    ggml_type: u32,
    /// The data offset field (u64, relative to the data section).
    offset_at: usize,
    /// Where the data is, absolute.
    data_at: usize,
}

/// The layout of a GGUF file.
#[derive(Debug)]
struct Layout {
    entries: HashMap<String, Entry>,
    tensors: HashMap<String, Tensor>,
    /// Where the metadata entries end and the tensor descriptions begin.
    metadata_end: usize,
    /// Where the tensor data begins.
    data_start: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        slice
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    fn skip_value(&mut self, value_type: u32) {
        match value_type {
            UINT8 | INT8 | BOOL => self.at += 1,
            UINT16 | INT16 => self.at += 2,
            UINT32 | INT32 | FLOAT32 => self.at += 4,
            UINT64 | INT64 | FLOAT64 => self.at += 8,
            STRING => {
                self.string();
            }
            ARRAY => {
                let element = self.u32();
                let n = self.u64();
                for _ in 0..n {
                    self.skip_value(element);
                }
            }
            other => panic!("unknown GGUF value type {other}"),
        }
    }
}

fn parse(bytes: &[u8]) -> Layout {
    let mut r = Reader { bytes, at: 0 };
    assert_eq!(r.take(4), b"GGUF");
    assert_eq!(r.u32(), 3, "GGUF version");
    let n_tensors = r.u64();
    let n_entries = r.u64();
    let mut entries = HashMap::new();
    let mut alignment = 32;
    for _ in 0..n_entries {
        let key_at = r.at;
        let key = r.string();
        let type_at = r.at;
        let value_type = r.u32();
        let value_at = r.at;
        if key == "general.alignment" {
            alignment = r.u32() as usize;
            r.at = value_at;
        }
        r.skip_value(value_type);
        entries.insert(
            key,
            Entry {
                key_at,
                type_at,
                value_type,
                value_at,
            },
        );
    }
    let metadata_end = r.at;
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = r.string();
        let n_dims = r.u32() as usize;
        let dims_at = r.at;
        let dims = (0..n_dims).map(|_| r.u64()).collect();
        let type_at = r.at;
        let ggml_type = r.u32();
        let offset_at = r.at;
        let offset = r.u64() as usize;
        tensors.push((name, dims_at, dims, type_at, ggml_type, offset_at, offset));
    }
    let data_start = r.at.div_ceil(alignment) * alignment;
    let tensors = tensors
        .into_iter()
        .map(
            |(name, dims_at, dims, type_at, ggml_type, offset_at, offset)| {
                let tensor = Tensor {
                    dims_at,
                    dims,
                    type_at,
                    ggml_type,
                    offset_at,
                    data_at: data_start + offset,
                };
                (name, tensor)
            },
        )
        .collect();
    Layout {
        entries,
        tensors,
        metadata_end,
        data_start,
    }
}

/// Changes to a copy of the model: bytes written at offsets, or the copy cut short.
struct Edits<'a> {
    /// The original's bytes up to its tensor data (what patches read).
    head: &'a [u8],
    writes: Vec<(usize, Vec<u8>)>,
    length: Option<usize>,
}

impl Edits<'_> {
    fn put(&mut self, at: usize, value: &[u8]) {
        self.writes.push((at, value.to_vec()));
    }

    fn xor(&mut self, at: usize, mask: u8) {
        self.put(at, &[self.head[at] ^ mask]);
    }

    fn truncate(&mut self, length: usize) {
        self.length = Some(length);
    }

    /// Writes the variant of `original` to `path`: a copy (of its first `length`
    /// bytes, when cut short) with the bytes patched in place.
    fn write(&self, original: &Path, path: &Path) {
        use std::io::{Read, Write};
        use std::os::unix::fs::FileExt;
        match self.length {
            None => {
                fs::copy(original, path).unwrap();
            }
            Some(length) => {
                let mut head = Vec::new();
                fs::File::open(original)
                    .unwrap()
                    .take(length as u64)
                    .read_to_end(&mut head)
                    .unwrap();
                fs::File::create(path).unwrap().write_all(&head).unwrap();
            }
        }
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        for (at, value) in &self.writes {
            file.write_all_at(value, *at as u64).unwrap();
        }
    }
}

/// A change to the model's bytes.
type Patch = Box<dyn Fn(&Layout, &mut Edits)>;

/// One corrupt model and what the user must be told about it.
struct Variant {
    name: &'static str,
    patch: Patch,
    expected: Expect,
}

/// What must happen with a variant.
enum Expect {
    /// The model is refused with an error that contains one of these (ignoring case).
    Refused(&'static [&'static str]),
    /// The model loads (nothing in it is out of llama.cpp's bounds), with a warning
    /// that contains one of these.
    LoadsWithWarning(&'static [&'static str]),
}

fn entry<'a>(layout: &'a Layout, key: &str) -> &'a Entry {
    layout
        .entries
        .get(key)
        .unwrap_or_else(|| panic!("the model has no {key}"))
}

fn tensor<'a>(layout: &'a Layout, name: &str) -> &'a Tensor {
    layout
        .tensors
        .get(name)
        .unwrap_or_else(|| panic!("the model has no tensor {name}"))
}

/// Sets a u32 hyperparameter.
fn set_u32(key: &'static str, value: u32) -> Patch {
    Box::new(move |layout, bytes| {
        let e = entry(layout, key);
        assert_eq!(e.value_type, UINT32, "{key}");
        bytes.put(e.value_at, &value.to_le_bytes());
    })
}

/// Sets an f32 hyperparameter.
fn set_f32(key: &'static str, value: f32) -> Patch {
    Box::new(move |layout, bytes| {
        let e = entry(layout, key);
        assert_eq!(e.value_type, FLOAT32, "{key}");
        bytes.put(e.value_at, &value.to_le_bytes());
    })
}

/// Cuts the file at `at(layout)`.
fn truncate(at: fn(&Layout) -> usize) -> Patch {
    Box::new(move |layout, bytes| bytes.truncate(at(layout)))
}

/// Block size in bytes, elements per block and where the block's f16 scale `d` is,
/// for the ggml types the default model uses.
fn block_layout(ggml_type: u32) -> (usize, usize, usize) {
    match ggml_type {
        1 => (2, 1, 0),        // F16: every element is an f16
        6 => (22, 32, 0),      // Q5_0
        8 => (34, 32, 0),      // Q8_0
        12 => (144, 256, 0),   // Q4_K
        13 => (176, 256, 0),   // Q5_K
        14 => (210, 256, 208), // Q6_K
        other => panic!("no block layout for ggml type {other}"),
    }
}

/// Sets the f16 scale of every block of a quantized tensor to `half`.
fn set_scales(name: &'static str, half: u16) -> Patch {
    Box::new(move |layout, bytes| {
        let t = tensor(layout, name);
        let (size, per_block, d_at) = block_layout(t.ggml_type);
        let blocks = t.dims.iter().product::<u64>() as usize / per_block;
        for block in 0..blocks {
            bytes.put(t.data_at + block * size + d_at, &half.to_le_bytes());
        }
    })
}

/// Sets every element of an F32 tensor to `value`.
fn fill_f32(name: &'static str, value: f32) -> Patch {
    Box::new(move |layout, bytes| {
        let t = tensor(layout, name);
        assert_eq!(t.ggml_type, 0, "{name} is not F32");
        let n = t.dims.iter().product::<u64>() as usize;
        let values: Vec<u8> = (0..n).flat_map(|_| value.to_le_bytes()).collect();
        bytes.put(t.data_at, &values);
    })
}

fn variants() -> Vec<Variant> {
    let v = |name, patch, expected| Variant {
        name,
        patch,
        expected: Expect::Refused(expected),
    };
    vec![
        // Cut short.
        v(
            "truncated inside the header",
            truncate(|_| 20),
            &["too short"],
        ),
        v(
            "truncated inside the metadata",
            truncate(|l| l.metadata_end / 2),
            &["failed to read", "truncated", "corrupt"],
        ),
        v(
            "truncated inside the tensor data",
            truncate(|l| l.data_start + 1_000_000),
            &["not within the file bounds", "corrupt"],
        ),
        // Header bytes flipped.
        v(
            "flipped magic",
            Box::new(|_, b| b.xor(0, 0x20)),
            &["not a GGUF file"],
        ),
        v(
            "flipped version",
            Box::new(|_, b| b.xor(4, 0x40)),
            &["unsupported GGUF version"],
        ),
        v(
            "tensor count one too many",
            Box::new(|_, b| b.put(8, &[b.head[8] + 1])),
            &["tensor", "failed to read"],
        ),
        v(
            "tensor count larger than the file",
            Box::new(|_, b| b.xor(13, 0x01)),
            &["truncated or corrupt"],
        ),
        v(
            "metadata count one too many",
            Box::new(|_, b| b.put(16, &[b.head[16] + 1])),
            &["key", "failed to read", "invalid"],
        ),
        // Metadata bytes flipped.
        v(
            "key length flipped",
            Box::new(|l, b| {
                let e = entry(l, "general.architecture");
                b.xor(e.key_at + 5, 0x10);
            }),
            &["key", "failed to read", "string", "too"],
        ),
        v(
            "value type flipped",
            Box::new(|l, b| {
                let e = entry(l, "gemma3.block_count");
                b.put(e.type_at, &[0x3f]);
            }),
            &["type"],
        ),
        v(
            "architecture name flipped",
            Box::new(|l, b| {
                let e = entry(l, "general.architecture");
                b.xor(e.value_at + 8 + 3, 0x02); // "gemma3" → "gemoa3"
            }),
            &["unknown model architecture"],
        ),
        // Hyperparameters llama.cpp asserts on (or divides by).
        v(
            "block_count 0",
            set_u32("gemma3.block_count", 0),
            &["block_count", "n_layer"],
        ),
        v(
            "block_count 1000",
            set_u32("gemma3.block_count", 1000),
            &["block_count", "n_layer"],
        ),
        v(
            "head_count 0",
            set_u32("gemma3.attention.head_count", 0),
            &["head", "n_embd", "shape"],
        ),
        v(
            "head_count huge",
            set_u32("gemma3.attention.head_count", 0x4000_0000),
            &["head", "n_embd", "shape"],
        ),
        v(
            "head_count_kv 0",
            set_u32("gemma3.attention.head_count_kv", 0),
            &["head", "n_embd", "shape"],
        ),
        v(
            "head_count_kv huge",
            set_u32("gemma3.attention.head_count_kv", 0x4000_0000),
            &["head", "n_embd", "shape"],
        ),
        v(
            "embedding_length 0",
            set_u32("gemma3.embedding_length", 0),
            &["embedding", "n_embd", "shape"],
        ),
        Variant {
            name: "context_length 0",
            patch: set_u32("gemma3.context_length", 0),
            expected: Expect::LoadsWithWarning(&["trained on"]),
        },
        v(
            "rms epsilon NaN",
            set_f32("gemma3.attention.layer_norm_rms_epsilon", f32::NAN),
            &["epsilon"],
        ),
        v(
            "rms epsilon infinite",
            set_f32("gemma3.attention.layer_norm_rms_epsilon", f32::INFINITY),
            &["epsilon", "NaN or infinite"],
        ),
        v(
            "rms epsilon negative",
            set_f32("gemma3.attention.layer_norm_rms_epsilon", -1.0),
            &["epsilon"],
        ),
        // Counts and tensor entries that do not fit the file.
        v(
            "vocabulary array longer than the file",
            Box::new(|l, b| {
                let e = entry(l, "tokenizer.ggml.tokens");
                b.put(e.value_at + 4, &(1u64 << 40).to_le_bytes());
            }),
            &["failed to read", "array", "too", "tokenizer"],
        ),
        v(
            "vocabulary dimension of the embeddings wrong",
            Box::new(|l, b| {
                let t = tensor(l, "token_embd.weight");
                b.put(t.dims_at + 8, &(t.dims[1] - 256).to_le_bytes());
            }),
            &[
                "wrong shape",
                "shape",
                "not within the file bounds",
                "offset",
            ],
        ),
        v(
            "tensor dimension huge",
            Box::new(|l, b| {
                let t = tensor(l, "blk.0.attn_q.weight");
                b.put(t.dims_at + 8, &(1u64 << 40).to_le_bytes());
            }),
            &[
                "not within the file bounds",
                "overflow",
                "shape",
                "size",
                "offset",
            ],
        ),
        v(
            "tensor type invalid",
            Box::new(|l, b| {
                let t = tensor(l, "blk.0.attn_q.weight");
                b.put(t.type_at, &200u32.to_le_bytes());
            }),
            &["type"],
        ),
        v(
            "tensor offset outside the file",
            Box::new(|l, b| {
                let t = tensor(l, "output_norm.weight");
                b.put(t.offset_at, &(1u64 << 36).to_le_bytes());
            }),
            &["not within the file bounds", "offset"],
        ),
        // Weights that are not numbers.
        v(
            "NaN norm weights",
            fill_f32("output_norm.weight", f32::NAN),
            &["NaN or infinite"],
        ),
        v(
            "NaN scales",
            set_scales("blk.0.attn_q.weight", 0x7e00),
            &["NaN or infinite"],
        ),
        v(
            "infinite scales",
            set_scales("blk.0.ffn_down.weight", 0x7c00),
            &["NaN or infinite"],
        ),
    ]
}

/// A directory of its own for each run, deleted at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("inkling-hostile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A server with `model` and its own cache directory; a document is opened at once.
fn start(model: &Path, cache: &Path) -> LspClient {
    let mut client = LspClient::launch(&Launch {
        env: vec![("INKLING_CACHE_DIR".into(), cache.display().to_string())],
        ..Launch::default()
    });
    client.initialize(vscode_capabilities(), json!({"model": model}));
    client.open("file:///w/kept.py", "python", "x = 1\ny = ");
    client
}

/// Loads `model` and returns what the user is told: the model must fail, the server
/// stay up with its document, and the `inkling/status` text be the one shown.
fn refusal(model: &Path, cache: &Path) -> String {
    let mut client = start(model, cache);
    let shown = client.wait_for(TIMEOUT, |m| {
        m["method"] == "window/showMessage" && m["params"]["type"] == 1
    });
    let text = shown["params"]["message"].as_str().unwrap().to_owned();
    let status = client.wait_for(TIMEOUT, |m| {
        m["method"] == "inkling/status" && m["params"]["state"] == "failed"
    });
    assert_eq!(
        format!("inkling: {}", status["params"]["message"].as_str().unwrap()),
        text
    );
    // Still serving, with the document it had.
    let stats = client.stats();
    assert_eq!(stats["modelState"], "failed", "{stats}");
    let response = client.inline_completion("file:///w/kept.py", 1, 4);
    assert!(response.get("error").is_none(), "{response}");
    assert_eq!(inline_items(&response), Vec::<Value>::new());
    client.edit("file:///w/kept.py", 2, (1, 4), (1, 4), "x");
    let response = client.inline_completion("file:///w/kept.py", 1, 5);
    assert!(
        response.get("error").is_none(),
        "the document was lost: {response}"
    );
    assert!(client.shutdown_and_exit().success(), "{text}");
    text
}

/// Loads `model`, which must become ready, and returns the warning shown meanwhile.
fn warning(model: &Path, cache: &Path) -> String {
    let mut client = start(model, cache);
    client.wait_until_ready(TIMEOUT);
    let shown = client.wait_for(TIMEOUT, |m| {
        m["method"] == "window/showMessage" && m["params"]["type"] == 2
    });
    let text = shown["params"]["message"].as_str().unwrap().to_owned();
    let response = client.inline_completion("file:///w/kept.py", 1, 4);
    assert!(response.get("error").is_none(), "{response}");
    assert!(client.shutdown_and_exit().success(), "{text}");
    text
}

/// Starts a server on `model` and returns how long it took to be ready.
fn time_to_ready(model: &Path, cache: &Path) -> Duration {
    let started = Instant::now();
    let mut client = start(model, cache);
    client.wait_until_ready(TIMEOUT);
    let elapsed = started.elapsed();
    let status = client.shutdown_and_exit();
    assert!(status.success(), "{status:?}");
    elapsed
}

#[test]
fn hostile_model_files_are_refused_with_a_reason_and_the_server_stays_up() {
    let started = Instant::now();
    let original = PathBuf::from(default_model_path());
    let bytes = fs::read(&original).expect("read the default model");
    let layout = parse(&bytes);
    let head = bytes[..layout.data_start].to_vec();
    drop(bytes);
    let scratch = Scratch::new();
    let cache = scratch.0.join("cache");

    // The real model passes; the check runs once, then its verdict is remembered.
    let copy = scratch.0.join("good.gguf");
    fs::copy(&original, &copy).unwrap();
    let first = time_to_ready(&copy, &cache);
    let verdicts = fs::read_to_string(cache.join("checked-models")).expect("a verdict");
    assert!(verdicts.contains("good.gguf"), "{verdicts}");
    let second = time_to_ready(&copy, &cache);
    eprintln!("ready on first load (check run): {first:?}, on the next (remembered): {second:?}");
    fs::remove_file(&copy).unwrap();

    let mut failures = Vec::new();
    let mut report = Vec::new();
    for variant in variants() {
        let path = scratch.0.join("variant.gguf");
        let mut edits = Edits {
            head: &head,
            writes: Vec::new(),
            length: None,
        };
        (variant.patch)(&layout, &mut edits);
        edits.write(&original, &path);
        let variant_started = Instant::now();
        let (message, expected) = match variant.expected {
            Expect::Refused(expected) => (refusal(&path, &cache), expected),
            Expect::LoadsWithWarning(expected) => (warning(&path, &cache), expected),
        };
        let elapsed = variant_started.elapsed();
        fs::remove_file(&path).unwrap();
        let lower = message.to_lowercase();
        let named = expected.iter().any(|e| lower.contains(&e.to_lowercase()));
        if lower.contains("null result") || lower.contains("null reference") || !named {
            failures.push(format!("{}: {message}", variant.name));
        }
        report.push(format!(
            "{:>5} ms  {}: {message}",
            elapsed.as_millis(),
            variant.name
        ));
    }
    // Paths that are no files at all: refused before they are opened.
    let fifo = scratch.0.join("fifo.gguf");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for (name, path, expected) in [
        ("a FIFO", fifo.as_path(), "named pipe"),
        ("a directory", scratch.0.as_path(), "directory"),
        ("a device", Path::new("/dev/zero"), "device"),
    ] {
        let message = refusal(path, &cache);
        if !message.contains(expected) {
            failures.push(format!("{name}: {message}"));
        }
        report.push(format!("{name}: {message}"));
    }
    eprintln!("{}", report.join("\n"));
    eprintln!("total {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "messages that do not name the problem:\n{}",
        failures.join("\n")
    );
}
