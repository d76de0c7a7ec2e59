//! A bounded reader of GGUF metadata: the header and every key/value pair. Every
//! model file goes through it before llama.cpp sees it, and `inkling models` reads
//! a file's architecture, name and vocabulary with it.
//!
//! Invariant: a hostile file gives an error, never a panic, a huge allocation or a
//! long loop. Every length and count is checked against the bytes the file has left
//! before anything is allocated, and what the metadata may take in memory is capped
//! ([`MAX_METADATA_MEMORY`]), which also bounds the number of values read. The
//! tensor descriptions after the metadata are not read (llama.cpp checks them).

use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// The most memory the metadata may take once read. Real files need a small part
/// of it: Gemma 3's 262k-token vocabulary with scores and types takes about 12 MB,
/// Qwen's 151k tokens and as many merges about 10 MB.
pub const MAX_METADATA_MEMORY: u64 = 256 << 20;
/// How deep arrays of arrays may nest (the format allows it; llama.cpp reads none).
const MAX_ARRAY_DEPTH: u32 = 8;
/// Magic, version, tensor count, metadata count.
const HEADER_BYTES: u64 = 24;

/// A GGUF file's header and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// The format version (2 or 3).
    pub version: u32,
    /// How many tensors the file describes after its metadata.
    pub tensor_count: u64,
    /// The key/value pairs in file order.
    pub entries: Vec<(String, Value)>,
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// An array value: all elements of one type, arrays of arrays included.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
}

/// The fill-in-the-middle token ids a file states, under llama.cpp's keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FimTokens {
    pub prefix: Option<u32>,
    pub suffix: Option<u32>,
    pub middle: Option<u32>,
    pub pad: Option<u32>,
    pub repo: Option<u32>,
    pub separator: Option<u32>,
}

impl Metadata {
    /// The value of `key` (the first, should the file repeat it).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` when it is a string.
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// `general.architecture`, e.g. `gemma3`, `qwen2`, `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.string("general.architecture")
    }

    /// `general.name`, e.g. `Gemma 3 270m`.
    pub fn name(&self) -> Option<&str> {
        self.string("general.name")
    }

    /// Whether the file carries a chat template (`tokenizer.chat_template`).
    pub fn has_chat_template(&self) -> bool {
        self.get("tokenizer.chat_template").is_some()
    }

    /// The vocabulary's token spellings (`tokenizer.ggml.tokens`), by id.
    pub fn tokens(&self) -> Option<&[String]> {
        match self.get("tokenizer.ggml.tokens")? {
            Value::Array(Array::String(tokens)) => Some(tokens),
            _ => None,
        }
    }

    /// The tokens' types (`tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte), by id.
    pub fn token_types(&self) -> Option<&[i32]> {
        match self.get("tokenizer.ggml.token_type")? {
            Value::Array(Array::I32(types)) => Some(types),
            _ => None,
        }
    }

    /// The value of `key` when it is an integer that fits a token id.
    pub fn token_id(&self, key: &str) -> Option<u32> {
        let id = match *self.get(key)? {
            Value::U8(n) => u64::from(n),
            Value::U16(n) => u64::from(n),
            Value::U32(n) => u64::from(n),
            Value::U64(n) => n,
            Value::I8(n) => u64::try_from(n).ok()?,
            Value::I16(n) => u64::try_from(n).ok()?,
            Value::I32(n) => u64::try_from(n).ok()?,
            Value::I64(n) => u64::try_from(n).ok()?,
            _ => return None,
        };
        u32::try_from(id).ok()
    }

    /// The FIM token ids the file states. As in llama.cpp, the older
    /// `tokenizer.ggml.{prefix,suffix,middle}_token_id` win over the newer keys.
    pub fn fim_tokens(&self) -> FimTokens {
        let id = |older: Option<&str>, key: &str| {
            older
                .and_then(|older| self.token_id(&format!("tokenizer.ggml.{older}_token_id")))
                .or_else(|| self.token_id(&format!("tokenizer.ggml.fim_{key}_token_id")))
        };
        FimTokens {
            prefix: id(Some("prefix"), "pre"),
            suffix: id(Some("suffix"), "suf"),
            middle: id(Some("middle"), "mid"),
            pad: id(None, "pad"),
            repo: id(None, "rep"),
            separator: id(None, "sep"),
        }
    }
}

/// Reads the header and metadata of the GGUF file `reader` holds from its start (a
/// byte slice reads through `std::io::Cursor`).
///
/// The error completes a sentence about the file, e.g. `is not a GGUF file (bad
/// magic)` or `is truncated or corrupt: …`.
pub fn read_metadata(mut reader: impl Read + Seek) -> Result<Metadata, String> {
    let cannot_read = |e: io::Error| format!("cannot be read: {e}");
    let len = reader.seek(SeekFrom::End(0)).map_err(cannot_read)?;
    reader.rewind().map_err(cannot_read)?;
    let mut source = Source {
        reader: BufReader::new(reader),
        len,
        remaining: len,
        memory_left: MAX_METADATA_MEMORY,
    };
    if len < HEADER_BYTES {
        return Err(format!("is too short to be a GGUF file ({len} bytes)"));
    }
    if &source.bytes::<4>("the magic")? != b"GGUF" {
        return Err("is not a GGUF file (bad magic)".into());
    }
    let version = u32::from_le_bytes(source.bytes("the version")?);
    if !(2..=3).contains(&version) {
        return Err(format!("has unsupported GGUF version {version}"));
    }
    let tensor_count = u64::from_le_bytes(source.bytes("the tensor count")?);
    let entry_count = u64::from_le_bytes(source.bytes("the metadata count")?);
    // Each tensor description and metadata entry takes well over 8 bytes.
    if tensor_count.saturating_add(entry_count).saturating_mul(8) > len {
        return Err(format!(
            "is truncated or corrupt: its header claims {tensor_count} tensors and {entry_count} metadata entries in {len} bytes"
        ));
    }
    source.charge(entry_count, size_of::<(String, Value)>())?;
    let mut entries = Vec::with_capacity(entry_count as usize);
    for _ in 0..entry_count {
        let key = source.string("a metadata key")?;
        let value = source.value(&key)?;
        entries.push((key, value));
    }
    Ok(Metadata {
        version,
        tensor_count,
        entries,
    })
}

/// The GGUF value types, by their code in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl Kind {
    const BY_CODE: [Kind; 13] = [
        Kind::U8,
        Kind::I8,
        Kind::U16,
        Kind::I16,
        Kind::U32,
        Kind::I32,
        Kind::F32,
        Kind::Bool,
        Kind::String,
        Kind::Array,
        Kind::U64,
        Kind::I64,
        Kind::F64,
    ];

    /// The fewest bytes a value of this type takes in the file.
    fn least_bytes(self) -> u64 {
        match self {
            Kind::U8 | Kind::I8 | Kind::Bool => 1,
            Kind::U16 | Kind::I16 => 2,
            Kind::U32 | Kind::I32 | Kind::F32 => 4,
            Kind::U64 | Kind::I64 | Kind::F64 | Kind::String => 8,
            Kind::Array => 4 + 8,
        }
    }
}

/// The file being read, with what is left of it and of the memory allowance.
struct Source<R> {
    reader: BufReader<R>,
    len: u64,
    /// Bytes from the current position to the end of the file.
    remaining: u64,
    /// What the metadata may still take in memory.
    memory_left: u64,
}

impl<R: Read> Source<R> {
    /// Consumes `n` bytes of the file (checked first, so a claimed length larger
    /// than the file is an error before anything is allocated).
    fn consume(&mut self, n: u64, what: &str) -> Result<(), String> {
        if n > self.remaining {
            return Err(format!(
                "is truncated or corrupt: {what} at byte {} needs {n} bytes, and {} are left",
                self.len - self.remaining,
                self.remaining
            ));
        }
        self.remaining -= n;
        Ok(())
    }

    /// Takes `count` values of `size` bytes each from the memory allowance.
    fn charge(&mut self, count: u64, size: usize) -> Result<(), String> {
        match count.checked_mul(size as u64) {
            Some(bytes) if bytes <= self.memory_left => {
                self.memory_left -= bytes;
                Ok(())
            }
            _ => Err(format!(
                "has more metadata than inkling reads (over {} MiB in memory)",
                MAX_METADATA_MEMORY >> 20
            )),
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        self.consume(N as u64, what)?;
        let mut buffer = [0; N];
        self.reader
            .read_exact(&mut buffer)
            .map_err(|e| format!("cannot be read: {e}"))?;
        Ok(buffer)
    }

    /// A length-prefixed string; invalid UTF-8 is replaced, as llama.cpp does not
    /// check it either.
    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = u64::from_le_bytes(self.bytes(what)?);
        self.consume(len, what)?;
        self.charge(len, 1)?;
        // `len` is at most the memory allowance now, so it fits a usize.
        let mut buffer = vec![0; len as usize];
        self.reader
            .read_exact(&mut buffer)
            .map_err(|e| format!("cannot be read: {e}"))?;
        Ok(String::from_utf8(buffer)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn kind(&mut self, key: &str) -> Result<Kind, String> {
        let code = u32::from_le_bytes(self.bytes("a value type")?);
        Kind::BY_CODE
            .get(code as usize)
            .copied()
            .ok_or_else(|| format!("is corrupt: metadata `{key}` has unknown value type {code}"))
    }

    fn value(&mut self, key: &str) -> Result<Value, String> {
        Ok(match self.kind(key)? {
            Kind::U8 => Value::U8(u8::from_le_bytes(self.bytes(key)?)),
            Kind::I8 => Value::I8(i8::from_le_bytes(self.bytes(key)?)),
            Kind::U16 => Value::U16(u16::from_le_bytes(self.bytes(key)?)),
            Kind::I16 => Value::I16(i16::from_le_bytes(self.bytes(key)?)),
            Kind::U32 => Value::U32(u32::from_le_bytes(self.bytes(key)?)),
            Kind::I32 => Value::I32(i32::from_le_bytes(self.bytes(key)?)),
            Kind::U64 => Value::U64(u64::from_le_bytes(self.bytes(key)?)),
            Kind::I64 => Value::I64(i64::from_le_bytes(self.bytes(key)?)),
            Kind::F32 => Value::F32(f32::from_le_bytes(self.bytes(key)?)),
            Kind::F64 => Value::F64(f64::from_le_bytes(self.bytes(key)?)),
            Kind::Bool => Value::Bool(self.bytes::<1>(key)?[0] != 0),
            Kind::String => Value::String(self.string(key)?),
            Kind::Array => Value::Array(self.array(key, 1)?),
        })
    }

    /// An array `depth` levels deep (a top-level array is 1; an empty array of
    /// arrays adds no level).
    fn array(&mut self, key: &str, depth: u32) -> Result<Array, String> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(format!(
                "is corrupt: metadata `{key}` nests arrays more than {MAX_ARRAY_DEPTH} deep"
            ));
        }
        let kind = self.kind(key)?;
        let count = u64::from_le_bytes(self.bytes(key)?);
        if count
            .checked_mul(kind.least_bytes())
            .is_none_or(|n| n > self.remaining)
        {
            return Err(format!(
                "is truncated or corrupt: metadata `{key}` claims {count} elements, more than the {} bytes left hold",
                self.remaining
            ));
        }
        Ok(match kind {
            Kind::U8 => Array::U8(self.elements(count, |s| Ok(u8::from_le_bytes(s.bytes(key)?)))?),
            Kind::I8 => Array::I8(self.elements(count, |s| Ok(i8::from_le_bytes(s.bytes(key)?)))?),
            Kind::U16 => {
                Array::U16(self.elements(count, |s| Ok(u16::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::I16 => {
                Array::I16(self.elements(count, |s| Ok(i16::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::U32 => {
                Array::U32(self.elements(count, |s| Ok(u32::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::I32 => {
                Array::I32(self.elements(count, |s| Ok(i32::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::U64 => {
                Array::U64(self.elements(count, |s| Ok(u64::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::I64 => {
                Array::I64(self.elements(count, |s| Ok(i64::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::F32 => {
                Array::F32(self.elements(count, |s| Ok(f32::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::F64 => {
                Array::F64(self.elements(count, |s| Ok(f64::from_le_bytes(s.bytes(key)?)))?)
            }
            Kind::Bool => Array::Bool(self.elements(count, |s| Ok(s.bytes::<1>(key)?[0] != 0))?),
            Kind::String => Array::String(self.elements(count, |s| s.string(key))?),
            Kind::Array => Array::Array(self.elements(count, |s| s.array(key, depth + 1))?),
        })
    }

    /// `count` elements read by `read`, charged to the memory allowance before the
    /// vector is allocated.
    fn elements<T>(
        &mut self,
        count: u64,
        mut read: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.charge(count, size_of::<T>())?;
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_gguf::{GgufValue, gguf_bytes};
    use std::io::Cursor;

    fn read(bytes: &[u8]) -> Result<Metadata, String> {
        read_metadata(Cursor::new(bytes))
    }

    fn header(version: u32, tensors: u64, entries: u64) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(tensors.to_le_bytes());
        bytes.extend(entries.to_le_bytes());
        bytes
    }

    #[test]
    fn reads_every_value_type_and_the_catalog_facts() {
        let bytes = gguf_bytes(&[
            ("general.architecture", GgufValue::Str("qwen2".into())),
            ("general.name", GgufValue::Str("Qwen2.5 Coder 0.5B".into())),
            (
                "tokenizer.chat_template",
                GgufValue::Str("{{ messages }}".into()),
            ),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Strs(vec!["a".into(), "<|fim_prefix|>".into()]),
            ),
            ("tokenizer.ggml.token_type", GgufValue::I32s(vec![1, 3])),
            ("tokenizer.ggml.fim_pre_token_id", GgufValue::U32(1)),
            ("tokenizer.ggml.fim_suf_token_id", GgufValue::U32(7)),
            ("tokenizer.ggml.suffix_token_id", GgufValue::U32(9)),
            (
                "tokenizer.ggml.fim_sep_token_id",
                GgufValue::Raw(5, 4i32.to_le_bytes().to_vec()),
            ),
            ("u8", GgufValue::Raw(0, vec![200])),
            ("i8", GgufValue::Raw(1, vec![0xff])),
            ("u16", GgufValue::Raw(2, 513u16.to_le_bytes().to_vec())),
            ("i16", GgufValue::Raw(3, (-2i16).to_le_bytes().to_vec())),
            ("f32", GgufValue::Raw(6, 0.5f32.to_le_bytes().to_vec())),
            ("bool", GgufValue::Bool(true)),
            ("u64", GgufValue::Raw(10, u64::MAX.to_le_bytes().to_vec())),
            ("i64", GgufValue::Raw(11, (-3i64).to_le_bytes().to_vec())),
            ("f64", GgufValue::Raw(12, 2.25f64.to_le_bytes().to_vec())),
            ("nested", GgufValue::Raw(9, nested_array())),
        ]);
        let metadata = read(&bytes).unwrap();
        assert_eq!(metadata.version, 3);
        assert_eq!(metadata.tensor_count, 0);
        assert_eq!(metadata.architecture(), Some("qwen2"));
        assert_eq!(metadata.name(), Some("Qwen2.5 Coder 0.5B"));
        assert!(metadata.has_chat_template());
        assert_eq!(
            metadata.tokens(),
            Some(&["a".to_owned(), "<|fim_prefix|>".to_owned()][..])
        );
        assert_eq!(metadata.token_types(), Some(&[1, 3][..]));
        assert_eq!(
            metadata.fim_tokens(),
            FimTokens {
                prefix: Some(1),
                suffix: Some(9),
                separator: Some(4),
                ..FimTokens::default()
            }
        );
        let value = |key| metadata.get(key).unwrap().clone();
        assert_eq!(value("u8"), Value::U8(200));
        assert_eq!(value("i8"), Value::I8(-1));
        assert_eq!(value("u16"), Value::U16(513));
        assert_eq!(value("i16"), Value::I16(-2));
        assert_eq!(value("f32"), Value::F32(0.5));
        assert_eq!(value("bool"), Value::Bool(true));
        assert_eq!(value("u64"), Value::U64(u64::MAX));
        assert_eq!(value("i64"), Value::I64(-3));
        assert_eq!(value("f64"), Value::F64(2.25));
        assert_eq!(
            value("nested"),
            Value::Array(Array::Array(vec![
                Array::U16(vec![1, 2]),
                Array::String(vec!["x".into()]),
            ]))
        );
        assert_eq!(metadata.token_id("i8"), None);
        assert_eq!(metadata.token_id("u64"), None);
        assert_eq!(metadata.token_id("u16"), Some(513));
    }

    /// An array of two arrays: `[1u16, 2u16]` and `["x"]`.
    fn nested_array() -> Vec<u8> {
        let mut bytes = 9u32.to_le_bytes().to_vec();
        bytes.extend(2u64.to_le_bytes());
        bytes.extend(2u32.to_le_bytes());
        bytes.extend(2u64.to_le_bytes());
        bytes.extend([1, 0, 2, 0]);
        bytes.extend(8u32.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.push(b'x');
        bytes
    }

    #[test]
    fn header_errors_say_what_is_wrong() {
        let error = |bytes: &[u8]| read(bytes).unwrap_err();
        assert!(error(b"GGUF").contains("too short"));
        assert!(error(b"this is not a model file, only text").contains("bad magic"));
        assert!(error(&header(1, 0, 0)).contains("version 1"));
        assert!(error(&header(3, u64::MAX / 2, 5)).contains("truncated or corrupt"));
        assert!(error(&header(3, 0, u64::MAX)).contains("truncated or corrupt"));
    }

    /// Lengths and counts larger than the file are refused before allocating;
    /// every cut of a valid file is an error, not a panic.
    #[test]
    fn hostile_lengths_and_cuts_are_errors() {
        let entry = |key: &str, kind: u32, payload: &[u8]| {
            let mut bytes = header(3, 0, 1);
            bytes.extend((key.len() as u64).to_le_bytes());
            bytes.extend(key.as_bytes());
            bytes.extend(kind.to_le_bytes());
            bytes.extend(payload);
            bytes
        };
        let huge_key = [
            header(3, 0, 1),
            u64::MAX.to_le_bytes().to_vec(),
            vec![0; 16],
        ]
        .concat();
        assert!(
            read(&huge_key)
                .unwrap_err()
                .contains("truncated or corrupt")
        );
        let huge_string = entry("s", 8, &(1u64 << 60).to_le_bytes());
        assert!(
            read(&huge_string)
                .unwrap_err()
                .contains("truncated or corrupt")
        );
        let huge_array = entry(
            "a",
            9,
            &[&8u32.to_le_bytes()[..], &u64::MAX.to_le_bytes()].concat(),
        );
        assert!(read(&huge_array).unwrap_err().contains("claims"));
        let unknown_type = entry("t", 13, &[0; 8]);
        assert!(
            read(&unknown_type)
                .unwrap_err()
                .contains("unknown value type 13")
        );
        let mut deep = Vec::new();
        for _ in 0..20 {
            deep.extend(9u32.to_le_bytes());
            deep.extend(1u64.to_le_bytes());
        }
        deep.extend(0u32.to_le_bytes());
        deep.extend(0u64.to_le_bytes());
        let deep = entry("deep", 9, &deep);
        assert!(read(&deep).unwrap_err().contains("more than 8 deep"));

        let valid = gguf_bytes(&[
            ("general.architecture", GgufValue::Str("llama".into())),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Strs(vec!["a".into(), "bc".into()]),
            ),
            ("nested", GgufValue::Raw(9, nested_array())),
        ]);
        let metadata_end = valid.len() - valid.iter().rev().take_while(|&&b| b == 0).count();
        for cut in 0..metadata_end {
            assert!(read(&valid[..cut]).is_err(), "cut at {cut}");
        }
        assert!(read(&valid).is_ok());
    }

    /// Many small values are cheap in the file and dear in memory: the allowance
    /// stops them.
    #[test]
    fn the_memory_allowance_bounds_empty_strings() {
        let count = MAX_METADATA_MEMORY / 24 + 1;
        let mut bytes = header(3, 0, 1);
        bytes.extend(1u64.to_le_bytes());
        bytes.push(b'a');
        bytes.extend(9u32.to_le_bytes());
        bytes.extend(8u32.to_le_bytes());
        bytes.extend(count.to_le_bytes());
        bytes.resize(bytes.len() + (count * 8) as usize, 0);
        let error = read(&bytes).unwrap_err();
        assert!(
            error.contains("more metadata than inkling reads"),
            "{error}"
        );
    }
}
