//! The typed-through cache: recent answers, so that typing the characters of the
//! suggestion on screen is answered from memory instead of the model.
//!
//! An answer `A` given with prefix `P` and suffix `S` still holds at prefix `P + t`
//! and suffix `S` when `t` is a start of `A`: the rest of `A` is the answer. Lookup
//! tries every cut of the current prefix up to [`MAX_TYPED_BYTES`] back, using
//! hashes of every prefix length computed in one pass, and confirms a hit by
//! comparing the stored text itself, so a hash collision never gives a wrong answer.
//!
//! Only the start of the suffix (its first [`SUFFIX_LINES`] lines) is part of the
//! key: the suffix window grows by a line when the user types a line break, and
//! what the model saw that far below the cursor barely matters.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;

use lru::LruCache;

use crate::context::CompletionContext;

/// Answers remembered, least recently used evicted (llama.vim keeps 250).
pub const CAPACITY: usize = 250;
/// How far back (in bytes of typed text) a cached answer is looked for.
pub const MAX_TYPED_BYTES: usize = 256;
/// Lines of the suffix that are part of the key.
pub const SUFFIX_LINES: usize = 8;

struct Entry {
    prefix: String,
    suffix_head: String,
    answer: String,
    prefetched: bool,
    cut: bool,
}

/// A remembered answer that still holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// What is left of the answer after the text typed since; empty where the
    /// answer was that there is nothing to suggest.
    pub text: String,
    /// Whether the answer was prefetched (computed before anyone asked for it).
    pub prefetched: bool,
    /// Whether the answer stopped where the model was unsure, its line going on
    /// (see `CompletionRequest::stop_when_unsure`).
    pub cut: bool,
}

/// Recent answers by context, least recently used evicted.
pub struct TypedThrough {
    entries: LruCache<u64, Entry>,
}

impl Default for TypedThrough {
    fn default() -> Self {
        TypedThrough {
            entries: LruCache::new(NonZeroUsize::new(CAPACITY).expect("non-zero")),
        }
    }
}

/// The first [`SUFFIX_LINES`] lines of `suffix`.
fn suffix_head(suffix: &str) -> &str {
    let end = suffix
        .match_indices('\n')
        .nth(SUFFIX_LINES - 1)
        .map_or(suffix.len(), |(i, _)| i + 1);
    &suffix[..end]
}

/// One step of the prefix hash (FNV-1a style; any odd multiplier works, since
/// collisions are caught by comparing the text).
fn hash_step(h: u64, byte: u8) -> u64 {
    (h ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
}

const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash of every prefix of `text`: `hashes[k]` covers `text[..k]`.
fn prefix_hashes(text: &str) -> Vec<u64> {
    let mut hashes = Vec::with_capacity(text.len() + 1);
    hashes.push(HASH_START);
    let mut h = HASH_START;
    for &b in text.as_bytes() {
        h = hash_step(h, b);
        hashes.push(h);
    }
    hashes
}

/// The hash of all of `text` (the last of [`prefix_hashes`], without the others).
fn text_hash(text: &str) -> u64 {
    text.bytes().fold(HASH_START, hash_step)
}

fn key(prefix_hash: u64, suffix_head: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    prefix_hash.hash(&mut hasher);
    suffix_head.hash(&mut hasher);
    hasher.finish()
}

impl TypedThrough {
    /// Remembers that `answer` was given at `context` (`cut` where the model was
    /// unsure); an empty answer remembers that there is nothing to suggest there (a
    /// hit at that very position only).
    pub fn remember(&mut self, context: &CompletionContext, answer: &str, cut: bool) {
        self.put(context, answer, false, cut);
    }

    /// Remembers `answer` for `context`, computed before anyone asked there.
    pub fn remember_prefetched(&mut self, context: &CompletionContext, answer: &str, cut: bool) {
        self.put(context, answer, true, cut);
    }

    /// Whether a remembered answer holds at `context` (without making it recent).
    pub fn contains(&self, context: &CompletionContext) -> bool {
        self.find(context).is_some()
    }

    /// The rest of a remembered answer whose start the user has typed since, if any.
    /// A hit is remembered again at the new position, so typing on keeps hitting.
    pub fn lookup(&mut self, context: &CompletionContext) -> Option<Hit> {
        let (key, hit) = self.find(context)?;
        self.entries.promote(&key);
        self.put(context, &hit.text, hit.prefetched, hit.cut);
        Some(hit)
    }

    fn put(&mut self, context: &CompletionContext, answer: &str, prefetched: bool, cut: bool) {
        let head = suffix_head(&context.suffix);
        let hash = text_hash(&context.prefix);
        self.entries.put(
            key(hash, head),
            Entry {
                prefix: context.prefix.clone(),
                suffix_head: head.to_owned(),
                answer: answer.to_owned(),
                prefetched,
                cut,
            },
        );
    }

    /// The remembered answer that holds at `context`, with its key.
    fn find(&self, context: &CompletionContext) -> Option<(u64, Hit)> {
        let prefix = &context.prefix;
        let head = suffix_head(&context.suffix);
        let hashes = prefix_hashes(prefix);
        let earliest = prefix.len().saturating_sub(MAX_TYPED_BYTES);
        (earliest..=prefix.len())
            .rev()
            .filter(|&cut| prefix.is_char_boundary(cut))
            .find_map(|cut| {
                let entry_key = key(hashes[cut], head);
                let entry = self.entries.peek(&entry_key)?;
                let typed = &prefix[cut..];
                let rest = entry.answer.strip_prefix(typed)?;
                let same = entry.prefix == prefix[..cut] && entry.suffix_head == head;
                let hit = Hit {
                    text: rest.to_owned(),
                    prefetched: entry.prefetched,
                    cut: entry.cut,
                };
                // A remembered answer typed to its end is no answer any more; a
                // remembered "nothing" holds where it was given.
                let holds = !rest.is_empty() || entry.answer.is_empty();
                (same && holds).then_some((entry_key, hit))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(prefix: &str, suffix: &str) -> CompletionContext {
        CompletionContext {
            prefix: prefix.into(),
            suffix: suffix.into(),
            ..CompletionContext::default()
        }
    }

    #[test]
    fn nothing_to_suggest_is_remembered_at_its_position_only() {
        let mut cache = TypedThrough::default();
        cache.remember(&at("x = 1\n", ""), "", false);
        let hit = cache.lookup(&at("x = 1\n", "")).unwrap();
        assert_eq!(hit.text, "");
        assert!(cache.contains(&at("x = 1\n", "")));
        assert!(cache.lookup(&at("x = 1\ny", "")).is_none());
        assert!(cache.lookup(&at("x = 1\n", "z")).is_none());
        // An answer typed to its end is not "nothing".
        cache.remember(&at("a = ", ""), "1", false);
        assert!(cache.lookup(&at("a = 1", "")).is_none());
    }

    #[test]
    fn typing_the_suggestion_is_answered_with_its_rest() {
        let mut cache = TypedThrough::default();
        cache.remember(
            &at("def f(x):\n    ret", "\n"),
            "urn x + 1\n    pass",
            false,
        );
        assert_eq!(
            cache
                .lookup(&at("def f(x):\n    retu", "\n"))
                .map(|hit| hit.text)
                .as_deref(),
            Some("rn x + 1\n    pass")
        );
        // Across a line break, too.
        assert_eq!(
            cache
                .lookup(&at("def f(x):\n    return x + 1\n  ", "\n"))
                .map(|hit| hit.text)
                .as_deref(),
            Some("  pass")
        );
        // The same position again is a hit (the answer is still right).
        assert_eq!(
            cache
                .lookup(&at("def f(x):\n    ret", "\n"))
                .map(|hit| hit.text)
                .as_deref(),
            Some("urn x + 1\n    pass")
        );
    }

    #[test]
    fn prefetched_answers_are_told_apart_and_peeking_changes_nothing() {
        let mut cache = TypedThrough::default();
        let accepted = at("x = compute(1)", "\n");
        assert!(!cache.contains(&accepted));
        cache.remember_prefetched(&accepted, "\ny = x + 1", false);
        assert!(cache.contains(&accepted));
        let hit = cache.lookup(&at("x = compute(1)\n", "\n")).unwrap();
        assert_eq!(hit.text, "y = x + 1");
        assert!(hit.prefetched);
        cache.remember(&at("z = ", "\n"), "2", false);
        assert!(!cache.lookup(&at("z = ", "\n")).unwrap().prefetched);
    }

    #[test]
    fn a_different_character_or_suffix_misses() {
        let mut cache = TypedThrough::default();
        cache.remember(&at("let x = ", ";\n"), "compute(1)", false);
        assert_eq!(cache.lookup(&at("let x = d", ";\n")), None);
        assert_eq!(cache.lookup(&at("let x = c", ")\n")), None);
        assert_eq!(cache.lookup(&at("let y = c", ";\n")), None);
        // Typing all of it leaves nothing to suggest.
        assert_eq!(cache.lookup(&at("let x = compute(1)", ";\n")), None);
    }

    #[test]
    fn only_the_start_of_the_suffix_is_compared() {
        let mut cache = TypedThrough::default();
        let near: String = "x\n".repeat(SUFFIX_LINES);
        cache.remember(&at("a", &format!("{near}far away")), "bc", false);
        assert_eq!(
            cache
                .lookup(&at("ab", &format!("{near}something else")))
                .map(|hit| hit.text)
                .as_deref(),
            Some("c")
        );
    }

    #[test]
    fn multi_byte_text_is_cut_on_character_boundaries() {
        let mut cache = TypedThrough::default();
        cache.remember(&at("s = \"", "\""), "héllo wörld", false);
        assert_eq!(
            cache
                .lookup(&at("s = \"hé", "\""))
                .map(|hit| hit.text)
                .as_deref(),
            Some("llo wörld")
        );
    }
}
