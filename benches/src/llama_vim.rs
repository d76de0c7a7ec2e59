//! llama.vim's client side, emulated in front of a real `llama-server`: the complete
//! peer of the `peer` benchmark.
//!
//! Ported from `autoload/llama.vim` of ggml-org/llama.vim (commit a1c8e6e, read
//! 2026-12-03), with its defaults: the local context (`s:fim_ctx_local`: 256 lines
//! before the cursor line, 64 after), the answer cache (`s:cache_insert`/`s:cache_get`:
//! an LRU of 250 answers keyed by prefix . middle . 'Î' . suffix, and under the keys
//! with the first 1–3 prefix lines trimmed), the typed-through look-up
//! (`s:fim_try_hint`: up to 128 bytes back), the post-processing before display
//! (`s:fim_render`), the speculative request sent after showing a suggestion, the
//! request pacing (one request in flight; a later one waits on a 100 ms timer that the
//! next one replaces) and the ring buffer of extra context (`s:pick_chunk`,
//! `s:ring_update`, the eviction in `llama#fim`), with a seeded random generator.
//!
//! Differences: cache keys are the key strings themselves, not their sha256 (same
//! hits, no hashing cost); Vim's strings are byte strings, and so are these; the
//! chunks' `time` field is not sent (llama-server ignores it); yanks and writes pick no
//! chunks (the replay does neither). Vim runs timers and job callbacks only between
//! keystrokes; so does [`LlamaVim`].

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// `g:llama_config` defaults that matter here.
pub const N_PREFIX: i64 = 256;
/// Lines after the cursor line in the local context.
pub const N_SUFFIX: i64 = 64;
/// Most tokens per answer.
pub const N_PREDICT: u32 = 128;
/// Prompt time limit sent (llama-server does not implement it).
pub const T_MAX_PROMPT_MS: u32 = 500;
/// Generation time limit of speculative requests.
pub const T_MAX_PREDICT_MS: u32 = 1000;
/// Generation time limit of the first request at a position ("the first request is
/// quick - we will launch a speculative request after this one is displayed").
pub const T_MAX_PREDICT_FIRST_MS: u32 = 250;
/// No automatic request with more than this many bytes right of the cursor.
pub const MAX_LINE_SUFFIX: usize = 8;
/// Answers kept in the cache.
pub const MAX_CACHE_KEYS: usize = 250;
/// Chunks of extra context sent with each request.
pub const RING_N_CHUNKS: usize = 16;
/// Lines per chunk.
pub const RING_CHUNK_SIZE: i64 = 64;
/// How far from the cursor chunks are picked.
pub const RING_SCOPE: i64 = 1024;
/// How often a queued chunk moves into the ring.
pub const RING_UPDATE: Duration = Duration::from_millis(1000);
/// How far back the typed-through look-up goes, in bytes.
pub const TRY_HINT_BACK: usize = 128;
/// How long a request waits while another is in flight.
pub const FIM_RETRY: Duration = Duration::from_millis(100);

/// The separator between the text before the cursor and after it in a cache key.
const KEY_SEPARATOR: &[u8] = "Î".as_bytes();

/// A Vim buffer: lines of bytes, a 1-based cursor line and a 0-based byte column.
#[derive(Clone, Debug)]
pub struct Buffer {
    /// The file name (`expand('%')`).
    pub name: String,
    lines: Vec<Vec<u8>>,
    /// The cursor line, 1-based (`line('.')`).
    pub y: i64,
    /// The cursor's byte column, 0-based (`col('.') - 1`).
    pub x: usize,
    /// Whether the buffer was edited since it was opened.
    pub modified: bool,
}

impl Buffer {
    /// A buffer holding `text` (a final newline ends the last line, as Vim reads
    /// files), with the cursor at 1-based line `y`, byte column `x`.
    pub fn new(name: &str, text: &str, y: i64, x: usize) -> Buffer {
        let mut lines: Vec<Vec<u8>> = text.split('\n').map(|l| l.as_bytes().to_vec()).collect();
        if text.ends_with('\n') {
            lines.pop();
        }
        if lines.is_empty() {
            lines.push(Vec::new());
        }
        Buffer {
            name: name.to_owned(),
            lines,
            y,
            x,
            modified: false,
        }
    }

    /// `line('$')`.
    pub fn last_line(&self) -> i64 {
        self.lines.len() as i64
    }

    /// `getline(n)`: empty beyond the buffer.
    pub fn line(&self, n: i64) -> &[u8] {
        if n < 1 {
            return &[];
        }
        self.lines.get(n as usize - 1).map_or(&[], Vec::as_slice)
    }

    /// `getline(a, b)`: lines `a..=b`, clipped to the buffer.
    pub fn lines(&self, a: i64, b: i64) -> Vec<Vec<u8>> {
        let b = b.min(self.last_line());
        if a < 1 || a > b {
            return Vec::new();
        }
        self.lines[a as usize - 1..b as usize].to_vec()
    }

    /// The lines within half a chunk of the cursor, as llama.vim picks them around it.
    fn around_cursor(&self) -> Vec<Vec<u8>> {
        self.lines(
            (self.y - RING_CHUNK_SIZE / 2).max(1),
            (self.y + RING_CHUNK_SIZE / 2).min(self.last_line()),
        )
    }

    /// Inserts `text` at the cursor and moves the cursor after it, as typing does.
    pub fn insert(&mut self, text: &str) {
        self.modified = true;
        for (i, part) in text.split('\n').enumerate() {
            let y = self.y as usize - 1;
            if i > 0 {
                let rest = self.lines[y].split_off(self.x);
                self.lines.insert(y + 1, rest);
                self.y += 1;
                self.x = 0;
            }
            let y = self.y as usize - 1;
            let x = self.x;
            self.lines[y].splice(x..x, part.bytes());
            self.x += part.len();
        }
    }
}

/// `s:cache_insert` / `s:cache_get`: answers' texts by key, least recently used first.
#[derive(Default)]
pub struct Cache {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Cache {
    /// Stores `value` under `key`. Like llama.vim, evicts the least recently used
    /// entry whenever the cache is full, even when `key` is already there.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if self.entries.len() > MAX_CACHE_KEYS - 1 {
            self.entries.remove(0);
        }
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value));
    }

    /// The answer stored under `head . 'Î' . suffix`, made the most recently used.
    /// (The typed-through look-up asks for 128 keys per keystroke: they are compared in
    /// place rather than built.)
    pub fn get(&mut self, head: &[u8], suffix: &[u8]) -> Option<Vec<u8>> {
        let len = head.len() + KEY_SEPARATOR.len() + suffix.len();
        let i = self.entries.iter().position(|(k, _)| {
            k.len() == len
                && k.starts_with(head)
                && k[head.len()..].starts_with(KEY_SEPARATOR)
                && k.ends_with(suffix)
        })?;
        Some(self.touch(i))
    }

    /// Whether an answer is stored under `key` (without using it).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// The answer stored under `key`, made the most recently used.
    pub fn get_key(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.touch(i))
    }

    fn touch(&mut self, i: usize) -> Vec<u8> {
        let entry = self.entries.remove(i);
        let value = entry.1.clone();
        self.entries.push(entry);
        value
    }

    /// How many answers are stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no answer is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A cache key: `head . 'Î' . suffix`.
fn key(head: &[u8], suffix: &[u8]) -> Vec<u8> {
    [head, KEY_SEPARATOR, suffix].concat()
}

/// Whether a line is empty or only blanks (`'^\s*$'`).
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| *b == b' ' || *b == b'\t')
}

/// The length of a line's leading blanks (`matchstr(line, '^\s*')`).
fn leading_blanks(line: &[u8]) -> usize {
    line.iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()
}

fn join_lines(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.join(&b'\n')
}

/// `s:fim_ctx_local`: the text around a position, optionally as if the suggestion
/// `prev` (its lines) had been accepted there.
#[derive(Clone, Debug, PartialEq)]
pub struct Ctx {
    /// The lines before the cursor line, each ending in a newline.
    pub prefix: Vec<u8>,
    /// The cursor line up to the cursor.
    pub middle: Vec<u8>,
    /// The rest of the cursor line and the lines after it.
    pub suffix: Vec<u8>,
    /// The cursor line's indentation (`n_indent`).
    pub indent: i64,
    /// The rest of the cursor line.
    pub line_cur_suffix: Vec<u8>,
}

impl Ctx {
    /// At `x`, `y` of `buffer`; `prev` as in llama.vim, `indent_last` the indentation
    /// of the last request (used with `prev`).
    pub fn local(buffer: &Buffer, x: usize, y: i64, prev: &[Vec<u8>], indent_last: i64) -> Ctx {
        let (line_cur_prefix, line_cur_suffix, mut lines_prefix, indent);
        if prev.is_empty() {
            let line_cur = buffer.line(y);
            let split = x.min(line_cur.len());
            lines_prefix = buffer.lines((y - N_PREFIX).max(1), y - 1);
            if is_blank(line_cur) {
                // "lines full of whitespaces - start from the beginning of the line"
                indent = 0;
                line_cur_prefix = Vec::new();
                line_cur_suffix = Vec::new();
            } else {
                indent = leading_blanks(line_cur) as i64;
                line_cur_prefix = line_cur[..split].to_vec();
                line_cur_suffix = line_cur[split..].to_vec();
            }
        } else {
            let first = [buffer.line(y), &prev[0]].concat();
            line_cur_prefix = if prev.len() == 1 {
                first.clone()
            } else {
                prev[prev.len() - 1].clone()
            };
            line_cur_suffix = Vec::new();
            lines_prefix = buffer.lines((y - N_PREFIX + prev.len() as i64 - 1).max(1), y - 1);
            if prev.len() > 1 {
                lines_prefix.push(first);
                lines_prefix.extend(prev[1..prev.len() - 1].iter().cloned());
            }
            indent = indent_last;
        }
        let lines_suffix = buffer.lines(y + 1, buffer.last_line().min(y + N_SUFFIX));
        let mut prefix = join_lines(&lines_prefix);
        prefix.push(b'\n');
        let mut suffix = line_cur_suffix.clone();
        suffix.push(b'\n');
        suffix.extend(join_lines(&lines_suffix));
        suffix.push(b'\n');
        Ctx {
            prefix,
            middle: line_cur_prefix,
            suffix,
            indent,
            line_cur_suffix,
        }
    }

    /// The keys an answer at this context is stored under: the full one, then with the
    /// first 1, 2, 3 prefix lines trimmed (for when the view scrolled down since).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = vec![key(
            &[self.prefix.as_slice(), &self.middle].concat(),
            &self.suffix,
        )];
        let mut trimmed: &[u8] = &self.prefix;
        for _ in 0..3 {
            if let Some(newline) = trimmed.iter().position(|b| *b == b'\n') {
                trimmed = &trimmed[newline + 1..];
            }
            if trimmed.is_empty() {
                break;
            }
            keys.push(key(&[trimmed, &self.middle].concat(), &self.suffix));
        }
        keys
    }
}

/// The cached answer `s:fim_try_hint` shows at `ctx`: the exact key's, else the
/// answers stored up to [`TRY_HINT_BACK`] bytes back whose text starts with what was
/// typed since, with that text removed. Like llama.vim, the first such remainder is
/// replaced by the second, and that by any longer one.
pub fn try_hint_lookup(cache: &mut Cache, ctx: &Ctx) -> Option<Vec<u8>> {
    let pm = [ctx.prefix.as_slice(), &ctx.middle].concat();
    if let Some(answer) = cache.get(&pm, &ctx.suffix) {
        return Some(answer);
    }
    let mut found: Option<Vec<u8>> = None;
    let mut best = 0;
    for i in 0..TRY_HINT_BACK.min(pm.len()) {
        let (head, removed) = pm.split_at(pm.len() - 1 - i);
        let Some(cached) = cache.get(head, &ctx.suffix) else {
            continue;
        };
        if cached.is_empty() || !cached.starts_with(removed) {
            continue;
        }
        let rest = cached[i + 1..].to_vec();
        if rest.is_empty() {
            continue;
        }
        if found.is_none() {
            found = Some(rest);
        } else if rest.len() > best {
            best = rest.len();
            found = Some(rest);
        }
    }
    found
}

/// A suggestion on display (`s:fim_data`).
#[derive(Clone, Debug, PartialEq)]
pub struct Hint {
    /// The cursor column and line it is shown at.
    pub x: usize,
    /// The 1-based line.
    pub y: i64,
    /// Whether it may be accepted (not empty, not only blanks).
    pub can_accept: bool,
    /// Its lines, the first shown at the cursor.
    pub content: Vec<Vec<u8>>,
}

/// `s:fim_render`: the suggestion shown at `x`, `y` for an answer `text`, after
/// llama.vim's checks against the text around it.
pub fn render(buffer: &Buffer, x: usize, y: i64, text: &[u8]) -> Hint {
    let mut can_accept = true;
    let mut content: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    while content.last().is_some_and(Vec::is_empty) {
        content.pop();
    }
    if content.is_empty() {
        content.push(Vec::new());
        can_accept = false;
    }
    let mut line_cur = buffer.line(y).to_vec();
    // "if the current line is full of whitespaces, trim as much whitespaces from the
    // suggestion"
    if is_blank(&line_cur) {
        let lead = leading_blanks(&content[0]).min(line_cur.len());
        line_cur = content[0][..lead].to_vec();
        content[0] = content[0][lead..].to_vec();
    }
    let split = x.min(line_cur.len());
    let (line_cur_prefix, line_cur_suffix) = line_cur.split_at(split);
    let empty = || vec![Vec::new()];
    if content.len() > 1
        && content[0].is_empty()
        && content[1..] == buffer.lines(y + 1, y + content.len() as i64 - 1)[..]
    {
        content = empty();
    }
    if content.len() == 1 && content[0] == line_cur_suffix {
        content = empty();
    }
    let mut cmp_y = y + 1;
    while cmp_y < buffer.last_line() && is_blank(buffer.line(cmp_y)) {
        cmp_y += 1;
    }
    if [line_cur_prefix, &content[0]].concat() == buffer.line(cmp_y) {
        let n = content.len();
        if n == 1 {
            content = empty();
        } else if n == 2 {
            let next = buffer.line(cmp_y + 1);
            let last = &content[1];
            // Vim's `s[:len - 1]` with len 0 is the whole string.
            let head = if last.is_empty() {
                next
            } else {
                &next[..last.len().min(next.len())]
            };
            if last.as_slice() == head {
                content = empty();
            }
        } else if join_lines(&content[1..])
            == join_lines(&buffer.lines(cmp_y + 1, cmp_y + n as i64 - 1))
        {
            content = empty();
        }
    }
    content
        .last_mut()
        .expect("never empty")
        .extend_from_slice(line_cur_suffix);
    // "if only whitespaces - do not accept" (`\s` matches no newline).
    if is_blank(&join_lines(&content)) {
        can_accept = false;
    }
    Hint {
        x,
        y,
        can_accept,
        content,
    }
}

/// `s:chunk_sim`: how alike two chunks are, from their words (0 to 1).
pub fn chunk_similarity(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    fn words(lines: &[Vec<u8>]) -> Vec<Vec<u8>> {
        join_lines(lines)
            .split(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }
    let (a, b) = (words(a), words(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let set: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
    let common = b.iter().filter(|w| set.contains(w)).count();
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

/// A chunk of extra context.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Its lines.
    pub data: Vec<Vec<u8>>,
    /// Its text as sent: the lines joined, ending in a newline.
    pub text: String,
    /// The file it came from.
    pub filename: String,
}

/// Vim's `rand()` stand-in: xorshift32 from a fixed seed, so runs repeat.
pub struct Random(u32);

impl Random {
    /// A generator from `seed` (not 0).
    pub fn new(seed: u32) -> Random {
        Random(seed.max(1))
    }

    /// `s:rand(i0, i1)`: a number in `i0..=i1`.
    pub fn between(&mut self, i0: i64, i1: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        i0 + i64::from(self.0) % (i1 - i0 + 1)
    }

    /// A random half-chunk of `text` (`text[l0:l1]` in llama.vim).
    fn half_chunk(&mut self, text: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let len = text.len() as i64;
        let l0 = self.between(0, (len - RING_CHUNK_SIZE / 2).max(0));
        let l1 = (l0 + RING_CHUNK_SIZE / 2).min(len);
        text[l0 as usize..((l1 + 1).min(len)) as usize].to_vec()
    }
}

/// The chunk separator llama-server puts before each extra chunk when the model has
/// no file-separator token (`format_prompt_infill`).
const SNIPPET_SEPARATOR: &str = "\n\n--- snippet ---\n\n";

/// The llama-server settings `/infill` sizes its prompt by.
#[derive(Clone, Copy, Debug)]
pub struct InfillBudget {
    /// `-b` (default 2048): the text before the cursor gets at most 3/4 of it.
    pub n_batch: usize,
    /// A slot's context (`-c` / `-np`).
    pub n_ctx: usize,
    /// The server's own `-n` (default -1): extra chunks get `n_ctx - n_batch - 2 n`.
    pub n_predict: i64,
}

/// The `/completion` body for llama.vim's `/infill` request `infill`, for a model
/// without FIM tokens (which `/infill` refuses): `/infill`'s prompt
/// (`format_prompt_infill`) without the FIM tokens and the text after the cursor, which
/// such a model cannot use (inkling leaves it out too): the newest extra chunks that
/// fit, each after llama-server's snippet separator, then BOS (`bos`, if the model
/// wants one), the last tokens of the text before the cursor that fit, and the cursor
/// line's text (left as text: llama-server tokenizes it as `/infill` does).
/// `tokenize` gives a text's tokens without special tokens. All other fields stay.
pub fn completion_without_fim(
    mut infill: Value,
    budget: InfillBudget,
    bos: &[i64],
    tokenize: &mut dyn FnMut(&str) -> Vec<i64>,
) -> Value {
    let mut extra = Vec::new();
    for chunk in infill["input_extra"].as_array().into_iter().flatten() {
        extra.extend(tokenize(SNIPPET_SEPARATOR));
        extra.extend(tokenize(chunk["text"].as_str().unwrap_or_default()));
    }
    let prefix = tokenize(infill["input_prefix"].as_str().unwrap_or_default());
    let prefix_take = prefix.len().min(3 * (budget.n_batch / 4));
    let extra_room = budget.n_ctx as i64 - budget.n_batch as i64 - 2 * budget.n_predict;
    let extra_take = extra.len().min(extra_room.max(0) as usize);
    let mut prompt: Vec<Value> = extra[extra.len() - extra_take..]
        .iter()
        .chain(bos)
        .chain(&prefix[prefix.len() - prefix_take..])
        .map(|&token| json!(token))
        .collect();
    prompt.push(infill["prompt"].clone());
    let fields = infill.as_object_mut().expect("an object");
    for name in ["input_prefix", "input_suffix", "input_extra"] {
        fields.remove(name);
    }
    fields.insert("prompt".into(), Value::Array(prompt));
    infill
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// llama.vim's FIM request (`llama#fim`), in `/infill` form.
pub fn fim_request(ctx: &Ctx, extra: &[Chunk], t_max_predict_ms: u32) -> Value {
    json!({
        "id_slot": 0,
        "input_prefix": text(&ctx.prefix),
        "input_suffix": text(&ctx.suffix),
        "input_extra": extra_json(extra),
        "prompt": text(&ctx.middle),
        "n_predict": N_PREDICT,
        "stop": [],
        "n_indent": ctx.indent,
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": false,
        "cache_prompt": true,
        "t_max_prompt_ms": T_MAX_PROMPT_MS,
        "t_max_predict_ms": t_max_predict_ms,
        "response_fields": [
            "content",
            "timings/prompt_n",
            "timings/prompt_ms",
            "timings/prompt_per_token_ms",
            "timings/prompt_per_second",
            "timings/predicted_n",
            "timings/predicted_ms",
            "timings/predicted_per_token_ms",
            "timings/predicted_per_second",
            "truncated",
            "tokens_cached",
        ],
    })
}

/// The request `s:ring_update` sends after a chunk joins the ring, so that the
/// server has the extra context cached before the next FIM request.
pub fn ring_request(extra: &[Chunk]) -> Value {
    json!({
        "id_slot": 0,
        "input_prefix": "",
        "input_suffix": "",
        "input_extra": extra_json(extra),
        "prompt": "",
        "n_predict": 0,
        "temperature": 0.0,
        "samplers": [],
        "stream": false,
        "cache_prompt": true,
        "t_max_prompt_ms": 1,
        "t_max_predict_ms": 1,
        "response_fields": [""],
    })
}

fn extra_json(extra: &[Chunk]) -> Value {
    extra
        .iter()
        .map(|c| json!({"text": c.text, "filename": c.filename}))
        .collect()
}

/// Sends llama.vim's requests (in `/infill` form) to the server: each answer (the
/// body, `None` on failure) goes to `done` with the job's number, from another thread.
pub trait Transport {
    /// Starts sending `infill`.
    fn post(&self, infill: Value, job: u64, done: Sender<(u64, Option<String>)>);
}

/// Vim's mode, as far as llama.vim looks at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Looking (ring updates run).
    Normal,
    /// Typing (suggestions are shown).
    Insert,
}

/// Where a keystroke's suggestion came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The client's cache, at once.
    Cache,
    /// An answer of the server, waited for.
    Server,
    /// Nothing to show.
    Nothing,
}

impl Source {
    /// Where a keystroke's suggestion came from: nothing shown, or shown from memory
    /// or from the server.
    pub fn of(shown: &Option<String>, from_memory: bool) -> Source {
        match (shown, from_memory) {
            (None, _) => Source::Nothing,
            (Some(_), true) => Source::Cache,
            (Some(_), false) => Source::Server,
        }
    }
}

/// What a keystroke led to.
#[derive(Clone, Debug)]
pub struct Keystroke {
    /// The suggestion shown (its lines joined), if any.
    pub shown: Option<String>,
    /// From the keystroke to the suggestion shown, or to knowing there is none.
    pub latency: Duration,
    /// Where the suggestion came from.
    pub source: Source,
}

/// Requests sent, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Requests {
    /// FIM requests for the cursor's position.
    pub fim: u64,
    /// Speculative FIM requests (as if the shown suggestion were accepted).
    pub speculative: u64,
    /// Ring-buffer updates (`n_predict` 0).
    pub ring: u64,
    /// Answers that were not a suggestion (errors, failed connections).
    pub failed: u64,
}

/// A deferred `llama#fim` call: position (`None`: the cursor's), `prev`, `use_cache`.
struct FimCall {
    at: Option<(usize, i64)>,
    prev: Vec<Vec<u8>>,
    use_cache: bool,
}

/// The FIM job in flight: its number, the keys its answer is stored under, and
/// whether it asks for the cursor's position (not a speculative request).
struct Job {
    id: u64,
    keys: Vec<Vec<u8>>,
    regular: bool,
}

/// llama.vim with `auto_fim`, in one buffer at a time.
pub struct LlamaVim<T: Transport> {
    transport: T,
    buffer: Buffer,
    mode: Mode,
    /// When the cursor last moved (`s:t_last_move`).
    last_move: Instant,
    cache: Cache,
    hint: Option<Hint>,
    job: Option<Job>,
    jobs_started: u64,
    fim_timer: Option<(Instant, FimCall)>,
    next_ring_update: Instant,
    buffer_enter: Option<Instant>,
    ring: Vec<Chunk>,
    queued: Vec<Chunk>,
    pos_y_pick: i64,
    indent_last: i64,
    random: Random,
    done_sender: Sender<(u64, Option<String>)>,
    done: Receiver<(u64, Option<String>)>,
    /// Requests sent so far.
    pub requests: Requests,
    /// Chunks evicted from the ring or the queue.
    pub evicted: u64,
}

impl<T: Transport> LlamaVim<T> {
    /// The plugin just enabled (its ring-update timer starts now), with an empty buffer.
    pub fn new(transport: T, seed: u32) -> LlamaVim<T> {
        let (done_sender, done) = mpsc::channel();
        let now = Instant::now();
        LlamaVim {
            transport,
            buffer: Buffer::new("", "", 1, 0),
            mode: Mode::Normal,
            last_move: now,
            cache: Cache::default(),
            hint: None,
            job: None,
            jobs_started: 0,
            fim_timer: None,
            next_ring_update: now + RING_UPDATE,
            buffer_enter: None,
            ring: Vec::new(),
            queued: Vec::new(),
            pos_y_pick: -9999,
            indent_last: -1,
            random: Random::new(seed),
            done_sender,
            done,
            requests: Requests::default(),
            evicted: 0,
        }
    }

    /// Answers in the client cache.
    pub fn cached_answers(&self) -> usize {
        self.cache.len()
    }

    /// Chunks in the ring.
    pub fn ring_len(&self) -> usize {
        self.ring.len()
    }

    /// Switches to `buffer` in normal mode: `BufLeave` of the current buffer, then
    /// `BufEnter` of the new one (its chunk is picked 100 ms later).
    pub fn open(&mut self, buffer: Buffer) {
        self.hide();
        self.mode = Mode::Normal;
        let around = self.buffer.around_cursor();
        self.pick_chunk(around, true, true);
        self.buffer = buffer;
        self.buffer_enter = Some(Instant::now() + Duration::from_millis(100));
    }

    /// The user looks at the buffer in normal mode for `pause`; timers and answers are
    /// handled meanwhile.
    pub fn look(&mut self, pause: Duration) {
        self.mode = Mode::Normal;
        self.pump(Instant::now() + pause, |_| false);
    }

    /// Types `text` at the cursor in insert mode (one key, or an accepted suggestion:
    /// either moves the cursor, which is what llama.vim reacts to) and waits until a
    /// suggestion is shown, or until the request for the cursor's position (which may
    /// first wait for a speculative one in flight) has been answered, or at once when
    /// none is needed.
    pub fn type_text(&mut self, text: &str) -> Keystroke {
        // Vim handles due timers and finished jobs between keystrokes.
        self.pump(Instant::now(), |_| false);
        self.mode = Mode::Insert;
        self.buffer.insert(text);
        let started = Instant::now();
        // The CursorMovedI autocommands, in their order: s:on_move, then llama#fim.
        self.on_move();
        let from_cache = self.acceptable();
        self.fim(None, Vec::new(), true);
        if !from_cache {
            let give_up = Instant::now() + Duration::from_secs(300);
            self.pump(give_up, |s| s.acceptable() || !s.asking());
            assert!(
                self.acceptable() || !self.asking(),
                "llama.vim emulation: no answer within 300 s"
            );
        }
        let latency = started.elapsed();
        let shown = self
            .hint
            .as_ref()
            .filter(|h| h.can_accept)
            .map(|h| text_of(&join_lines(&h.content)));
        let source = Source::of(&shown, from_cache);
        Keystroke {
            shown,
            latency,
            source,
        }
    }

    /// Waits for the requests in flight to end (between replays).
    pub fn settle(&mut self) {
        let give_up = Instant::now() + Duration::from_secs(300);
        self.pump(give_up, |s| s.idle());
    }

    fn acceptable(&self) -> bool {
        self.hint.as_ref().is_some_and(|h| h.can_accept)
    }

    fn idle(&self) -> bool {
        self.job.is_none() && self.fim_timer.is_none()
    }

    /// Whether a request for the cursor's position is in flight or waiting to be sent:
    /// what the user waits for when no suggestion is shown. A speculative request is
    /// not (its answer is for a position the cursor is not at), nor a waiting call
    /// that will find its answer in the cache and send nothing.
    fn asking(&self) -> bool {
        self.job.as_ref().is_some_and(|job| job.regular)
            || self
                .fim_timer
                .as_ref()
                .is_some_and(|(_, call)| call.prev.is_empty() && self.would_send(call))
    }

    /// Whether `llama#fim` would send a request for `call` now.
    fn would_send(&self, call: &FimCall) -> bool {
        let (x, y) = call.at.unwrap_or((self.buffer.x, self.buffer.y));
        let ctx = Ctx::local(&self.buffer, x, y, &call.prev, self.indent_last);
        ctx.line_cur_suffix.len() <= MAX_LINE_SUFFIX
            && !(call.use_cache && ctx.keys().iter().any(|key| self.cache.contains(key)))
    }

    /// Handles timers and answers until `until` holds or `deadline` passes.
    fn pump(&mut self, deadline: Instant, until: impl Fn(&Self) -> bool) {
        loop {
            while let Ok((id, answer)) = self.done.try_recv() {
                self.finished(id, answer);
            }
            if until(self) {
                return;
            }
            let now = Instant::now();
            if self.fim_timer.as_ref().is_some_and(|(at, _)| *at <= now) {
                let (_, call) = self.fim_timer.take().expect("checked");
                self.fim(call.at, call.prev, call.use_cache);
                continue;
            }
            if self.next_ring_update <= now {
                // The timer is started again at each call, so late ticks are not made up.
                self.next_ring_update = now + RING_UPDATE;
                self.ring_update();
                continue;
            }
            if self.buffer_enter.is_some_and(|at| at <= now) {
                self.buffer_enter = None;
                let around = self.buffer.around_cursor();
                self.pick_chunk(around, true, true);
                continue;
            }
            if now >= deadline {
                return;
            }
            let next = [
                Some(deadline),
                Some(self.next_ring_update),
                self.buffer_enter,
                self.fim_timer.as_ref().map(|(at, _)| *at),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("the deadline");
            match self.done.recv_timeout(next.saturating_duration_since(now)) {
                Ok((id, answer)) => self.finished(id, answer),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("the sender is ours"),
            }
        }
    }

    /// A request ended: for the FIM job, `s:fim_on_response` then `s:fim_on_exit`.
    fn finished(&mut self, id: u64, answer: Option<String>) {
        let Some(answer) = answer else {
            self.requests.failed += 1;
            if self.job.as_ref().is_some_and(|job| job.id == id) {
                self.job = None;
            }
            return;
        };
        let Some(job) = self.job.take_if(|job| job.id == id) else {
            return; // A ring update: nobody reads its answer.
        };
        let content = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| v["content"].as_str().map(|c| c.as_bytes().to_vec()));
        let Some(content) = content else {
            self.requests.failed += 1;
            return;
        };
        for key in job.keys {
            self.cache.insert(key, content.clone());
        }
        if !self.acceptable() {
            // The job counts as running until its exit callback, which comes after
            // this one: a speculative request started from here waits on the timer.
            self.job = Some(Job {
                id,
                keys: Vec::new(),
                regular: false,
            });
            self.try_hint();
            self.job = None;
        }
    }

    /// `s:on_move`.
    fn on_move(&mut self) {
        self.last_move = Instant::now();
        self.hide();
        self.try_hint();
    }

    fn hide(&mut self) {
        self.hint = None;
    }

    /// `s:fim_try_hint` at the cursor: shows a cached answer, then asks for the next
    /// one as if it were accepted.
    fn try_hint(&mut self) {
        if self.mode != Mode::Insert {
            return;
        }
        let (x, y) = (self.buffer.x, self.buffer.y);
        let ctx = Ctx::local(&self.buffer, x, y, &[], self.indent_last);
        if let Some(answer) = try_hint_lookup(&mut self.cache, &ctx) {
            let hint = render(&self.buffer, x, y, &answer);
            let content = hint.content.clone();
            self.hint = Some(hint);
            self.fim(Some((x, y)), content, true);
        }
    }

    /// `llama#fim` (always automatic here).
    fn fim(&mut self, at: Option<(usize, i64)>, prev: Vec<Vec<u8>>, use_cache: bool) {
        if self.job.is_some() {
            // "avoid sending repeated requests too fast": the latest call waits.
            self.fim_timer = Some((
                Instant::now() + FIM_RETRY,
                FimCall {
                    at,
                    prev,
                    use_cache,
                },
            ));
            return;
        }
        let (x, y) = at.unwrap_or((self.buffer.x, self.buffer.y));
        let ctx = Ctx::local(&self.buffer, x, y, &prev, self.indent_last);
        if ctx.line_cur_suffix.len() > MAX_LINE_SUFFIX {
            return;
        }
        let keys = ctx.keys();
        if use_cache {
            for key in &keys {
                if self.cache.get_key(key).is_some() {
                    return;
                }
            }
        }
        self.indent_last = ctx.indent;
        // Evict ring chunks much like the text around the cursor: "such chunks usually
        // distort the completion to repeat what was already there".
        let around = self.buffer.around_cursor();
        let nearby = self.random.half_chunk(&around);
        let before = self.ring.len();
        self.ring
            .retain(|chunk| chunk_similarity(&chunk.data, &nearby) <= 0.5);
        self.evicted += (before - self.ring.len()) as u64;
        let t_max_predict_ms = if prev.is_empty() {
            self.requests.fim += 1;
            T_MAX_PREDICT_FIRST_MS
        } else {
            self.requests.speculative += 1;
            T_MAX_PREDICT_MS
        };
        let request = fim_request(&ctx, &self.ring, t_max_predict_ms);
        let id = self.send(request);
        self.job = Some(Job {
            id,
            keys,
            regular: prev.is_empty(),
        });
        // Gather chunks farther away when the cursor moved a lot.
        if (y - self.pos_y_pick).abs() > 32 {
            let last = self.buffer.last_line();
            let above = self
                .buffer
                .lines((y - RING_SCOPE).max(1), (y - N_PREFIX).max(1));
            self.pick_chunk(above, false, false);
            let below = self.buffer.lines(
                (y + N_SUFFIX).min(last),
                (y + N_SUFFIX + RING_CHUNK_SIZE).min(last),
            );
            self.pick_chunk(below, false, false);
            self.pos_y_pick = y;
        }
    }

    fn send(&mut self, infill: Value) -> u64 {
        self.jobs_started += 1;
        let id = self.jobs_started;
        self.transport.post(infill, id, self.done_sender.clone());
        id
    }

    /// `s:pick_chunk`: queues a random chunk of `text` unless one like it is there.
    fn pick_chunk(&mut self, text: Vec<Vec<u8>>, no_mod: bool, do_evict: bool) {
        if (no_mod && (self.buffer.modified || self.buffer.name.is_empty())) || text.len() < 3 {
            return;
        }
        let data = if (text.len() as i64) + 1 < RING_CHUNK_SIZE {
            text
        } else {
            self.random.half_chunk(&text)
        };
        if self.ring.iter().chain(&self.queued).any(|c| c.data == data) {
            return;
        }
        for list in [&mut self.queued, &mut self.ring] {
            for i in (0..list.len()).rev() {
                if chunk_similarity(&list[i].data, &data) > 0.9 {
                    if !do_evict {
                        return;
                    }
                    list.remove(i);
                    self.evicted += 1;
                }
            }
        }
        if self.queued.len() == 16 {
            self.queued.remove(0);
        }
        let mut text = join_lines(&data);
        text.push(b'\n');
        self.queued.push(Chunk {
            data,
            text: text_of(&text),
            filename: self.buffer.name.clone(),
        });
    }

    /// `s:ring_update`: in normal mode, or after 3 s without moving, moves a queued
    /// chunk into the ring and has the server process the new extra context.
    fn ring_update(&mut self) {
        if self.mode != Mode::Normal && self.last_move.elapsed() < Duration::from_secs(3) {
            return;
        }
        if self.queued.is_empty() {
            return;
        }
        if self.ring.len() == RING_N_CHUNKS {
            self.ring.remove(0);
        }
        let chunk = self.queued.remove(0);
        self.ring.push(chunk);
        self.requests.ring += 1;
        let request = ring_request(&self.ring);
        self.send(request);
    }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<Vec<u8>> {
        texts.iter().map(|t| t.as_bytes().to_vec()).collect()
    }

    #[test]
    fn buffer_inserts_text_and_newlines_at_the_cursor() {
        let mut buffer = Buffer::new("a.py", "one\n\nthree\n", 2, 0);
        assert_eq!(buffer.last_line(), 3);
        buffer.insert("de");
        buffer.insert("f x\n  y");
        assert_eq!(buffer.line(2), b"def x");
        assert_eq!(buffer.line(3), b"  y");
        assert_eq!(buffer.line(4), b"three");
        assert_eq!((buffer.y, buffer.x), (3, 3));
        assert!(buffer.modified);
        assert_eq!(buffer.line(9), b"");
        assert_eq!(buffer.lines(3, 99), lines(&["  y", "three"]));
    }

    #[test]
    fn local_context_splits_at_the_cursor_and_ignores_a_blank_line() {
        let buffer = Buffer::new("a.py", "a\n  bc\nd\n", 2, 3);
        let ctx = Ctx::local(&buffer, 3, 2, &[], -1);
        assert_eq!(ctx.prefix, b"a\n");
        assert_eq!(ctx.middle, b"  b");
        assert_eq!(ctx.suffix, b"c\nd\n");
        assert_eq!(ctx.indent, 2);
        let blank = Buffer::new("a.py", "a\n    \nd\n", 2, 4);
        let ctx = Ctx::local(&blank, 4, 2, &[], -1);
        assert_eq!(
            (ctx.middle.as_slice(), ctx.suffix.as_slice()),
            (&b""[..], &b"\nd\n"[..])
        );
        assert_eq!(ctx.indent, 0);
    }

    #[test]
    fn speculative_context_is_the_one_after_accepting_the_suggestion() {
        let mut buffer = Buffer::new("a.py", "a\n  x = \nd\n", 2, 6);
        let speculative = Ctx::local(&buffer, 6, 2, &lines(&["1"]), 2);
        buffer.insert("1");
        let after = Ctx::local(&buffer, 7, 2, &[], -1);
        assert_eq!(speculative.keys()[0], after.keys()[0]);
        let two = Ctx::local(&buffer, 7, 2, &lines(&["", "  y = 2"]), 2);
        assert_eq!(two.prefix, b"a\n  x = 1\n");
        assert_eq!(two.middle, b"  y = 2");
    }

    #[test]
    fn keys_trim_up_to_three_prefix_lines() {
        let buffer = Buffer::new("a.py", "1\n2\n3\n4\n5\nx\n", 6, 1);
        let keys = Ctx::local(&buffer, 1, 6, &[], -1).keys();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[3], key(b"4\n5\nx", b"\n\n"));
        let short = Buffer::new("a.py", "1\nx\n", 2, 1);
        assert_eq!(Ctx::local(&short, 1, 2, &[], -1).keys().len(), 1);
    }

    #[test]
    fn cache_evicts_the_least_recently_used_answer() {
        let mut cache = Cache::default();
        for i in 0..MAX_CACHE_KEYS {
            cache.insert(key(format!("{i}").as_bytes(), b"s"), vec![b'a']);
        }
        assert!(cache.get(b"0", b"s").is_some()); // 0 is now the most recent.
        cache.insert(key(b"new", b"s"), vec![b'b']);
        assert_eq!(cache.len(), MAX_CACHE_KEYS);
        assert!(cache.get(b"0", b"s").is_some());
        assert!(cache.get(b"1", b"s").is_none());
        assert!(cache.get(b"new", b"s").is_some());
    }

    #[test]
    fn typed_through_lookup_keeps_what_is_left_of_an_earlier_answer() {
        let mut cache = Cache::default();
        let mut buffer = Buffer::new("a.py", "a\n\nz\n", 2, 0);
        buffer.insert("ret");
        let ctx = Ctx::local(&buffer, 3, 2, &[], -1);
        cache.insert(ctx.keys()[0].clone(), b"urn x".to_vec());
        buffer.insert("ur");
        let later = Ctx::local(&buffer, 5, 2, &[], -1);
        assert_eq!(try_hint_lookup(&mut cache, &later), Some(b"n x".to_vec()));
        buffer.insert("x");
        let wrong = Ctx::local(&buffer, 6, 2, &[], -1);
        assert_eq!(try_hint_lookup(&mut cache, &wrong), None);
    }

    #[test]
    fn render_trims_typed_indentation_and_drops_repeats_of_the_next_line() {
        let buffer = Buffer::new("a.py", "def f():\n    \n    return 1\n", 2, 4);
        let hint = render(&buffer, 4, 2, b"        x = 1\n");
        assert_eq!(hint.content, lines(&["    x = 1"]));
        assert!(hint.can_accept);
        let repeat = render(&buffer, 4, 2, b"    return 1");
        assert_eq!(repeat.content, lines(&[""]));
        assert!(!repeat.can_accept);
        let blank = render(&buffer, 4, 2, b"  \n\n");
        assert!(!blank.can_accept);
        let two = render(&buffer, 4, 2, b"\n    return 1\n");
        assert_eq!(two.content, lines(&[""]));
    }

    #[test]
    fn chunk_similarity_counts_shared_words() {
        let a = lines(&["def f(x):", "    return x"]);
        assert_eq!(chunk_similarity(&a, &a), 1.0);
        assert_eq!(chunk_similarity(&a, &lines(&["class C:"])), 0.0);
        assert_eq!(chunk_similarity(&[], &[]), 1.0);
    }

    #[test]
    fn completion_without_fim_keeps_what_infill_would_fit_and_drops_the_suffix() {
        let buffer = Buffer::new("a.py", "abc\nbb\nc\n", 2, 1);
        let ctx = Ctx::local(&buffer, 1, 2, &[], -1);
        let chunk = |text: &str| Chunk {
            data: lines(&[text]),
            text: format!("{text}\n"),
            filename: "o.py".into(),
        };
        let infill = fim_request(&ctx, &[chunk("x"), chunk("y")], 250);
        // One token per character.
        let mut tokenize = |text: &str| text.chars().map(|c| c as i64).collect::<Vec<_>>();
        let roomy = InfillBudget {
            n_batch: 2048,
            n_ctx: 4096,
            n_predict: -1,
        };
        let body = completion_without_fim(infill.clone(), roomy, &[2], &mut tokenize);
        let expected: Vec<Value> = format!("{SNIPPET_SEPARATOR}x\n{SNIPPET_SEPARATOR}y\n")
            .chars()
            .map(|c| json!(c as i64))
            .chain([2, 'a' as i64, 'b' as i64, 'c' as i64, '\n' as i64].map(|t| json!(t)))
            .chain([json!("b")])
            .collect();
        assert_eq!(body["prompt"], Value::Array(expected));
        assert!(body.get("input_suffix").is_none());
        assert!(body.get("input_extra").is_none());
        assert_eq!(body["n_indent"], 0);
        assert_eq!(body["t_max_predict_ms"], 250);
        assert_eq!(body["samplers"], json!(["top_k", "top_p", "infill"]));
        // A batch of 4 takes the last 3 prefix tokens; a context of 4 + 4 + 2 × 1
        // takes the newest 4 tokens of the extra chunks.
        let tight = InfillBudget {
            n_batch: 4,
            n_ctx: 10,
            n_predict: 1,
        };
        let body = completion_without_fim(infill, tight, &[], &mut tokenize);
        let prompt: Vec<Value> = ['\n', '\n', 'y', '\n', 'b', 'c', '\n']
            .into_iter()
            .map(|c| json!(c as i64))
            .chain([json!("b")])
            .collect();
        assert_eq!(body["prompt"], Value::Array(prompt));
    }

    /// Answers every request at once with `answer` as the content, recording bodies.
    struct Fake {
        answer: &'static str,
        bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    }

    impl Transport for Fake {
        fn post(&self, infill: Value, job: u64, done: Sender<(u64, Option<String>)>) {
            self.bodies.lock().unwrap().push(infill);
            let answer = json!({"content": self.answer}).to_string();
            done.send((job, Some(answer))).unwrap();
        }
    }

    /// Answers requests for the cursor's position with an empty text; never answers
    /// speculative ones.
    struct SilentOnSpeculation;

    impl Transport for SilentOnSpeculation {
        fn post(&self, infill: Value, job: u64, done: Sender<(u64, Option<String>)>) {
            if infill["t_max_predict_ms"] == T_MAX_PREDICT_FIRST_MS {
                done.send((job, Some(r#"{"content":""}"#.into()))).unwrap();
            }
        }
    }

    #[test]
    fn a_keystroke_does_not_wait_for_a_speculative_request() {
        let mut vim = LlamaVim::new(SilentOnSpeculation, 7);
        vim.open(Buffer::new("a.py", "def f():\n\n", 2, 0));
        assert_eq!(vim.type_text(" ").source, Source::Nothing);
        // The blank line's empty answer is cached: the request this keystroke would
        // send waits behind the unanswered speculative one, but would send nothing.
        assert_eq!(vim.type_text(" ").source, Source::Nothing);
        assert_eq!(vim.requests.fim, 1);
        assert!(vim.requests.speculative >= 1);
    }

    #[test]
    fn a_shown_answer_is_typed_through_from_the_cache_and_prefetched_as_accepted() {
        let bodies = std::sync::Arc::default();
        let fake = Fake {
            answer: "eturn x",
            bodies: std::sync::Arc::clone(&bodies),
        };
        let mut vim = LlamaVim::new(fake, 7);
        vim.open(Buffer::new("a.py", "def f(x):\n    \n", 2, 4));
        let first = vim.type_text("r");
        assert_eq!(first.source, Source::Server);
        assert_eq!(first.shown.as_deref(), Some("eturn x"));
        // Its speculative request waits on the timer: the answer is still in flight.
        let second = vim.type_text("e");
        assert_eq!(second.source, Source::Cache);
        assert_eq!(second.shown.as_deref(), Some("turn x"));
        vim.settle();
        let sent = bodies.lock().unwrap().clone();
        assert_eq!(sent[0]["prompt"], "    r");
        assert_eq!(sent[0]["t_max_predict_ms"], T_MAX_PREDICT_FIRST_MS);
        assert!(
            sent.iter()
                .any(|b| b["prompt"] == "    return x" && b["t_max_predict_ms"] == T_MAX_PREDICT_MS),
            "{sent:?}"
        );
        assert_eq!(
            vim.requests.fim + vim.requests.speculative,
            sent.len() as u64
        );
    }
}
