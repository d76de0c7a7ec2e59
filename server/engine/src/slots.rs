//! Warm states: one KV cache per document. The context holds one document's cache
//! at a time; switching saves it (`state_seq_get`, with its tokens) into an LRU of
//! `warmStates - 1` entries and restores the next document's if it is there.
//!
//! Invariant: the saved states together take at most the byte budget given at
//! start (by the worker: a quarter of the memory available once the model is in),
//! since `warmStates` times a large `contextSize` would otherwise exhaust memory.
//! The least recently used go first.
//!
//! Invariant: a state whose shifted cells are not yet re-rotated (llama.cpp does
//! that on the next decode) is dropped, never saved, since a saved state would lose
//! the rotation.

use std::num::NonZeroUsize;

use inkling_core::tokens::Token;
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use lru::LruCache;

use crate::sequence::Sequence;

/// A document's KV cache, saved while another document uses the context.
struct WarmState {
    tokens: Vec<Token>,
    state: SeqState,
}

/// What a saved entry weighs, in bytes.
trait Weighed {
    fn bytes(&self) -> usize;
}

impl Weighed for WarmState {
    fn bytes(&self) -> usize {
        self.state.byte_len() + self.tokens.len() * size_of::<Token>()
    }
}

/// An LRU of at most `capacity` entries that together weigh at most `budget` bytes.
struct Saved<V> {
    entries: LruCache<String, V>,
    bytes: usize,
    budget: usize,
}

impl<V: Weighed> Saved<V> {
    fn new(capacity: NonZeroUsize, budget: usize) -> Saved<V> {
        Saved {
            entries: LruCache::new(capacity),
            bytes: 0,
            budget,
        }
    }

    /// Keeps `value` as `key`'s, first dropping the least recently used entries it
    /// does not fit beside; nothing when it alone is over the budget.
    fn put(&mut self, key: String, value: V) {
        self.take(&key);
        let bytes = value.bytes();
        if bytes > self.budget {
            tracing::debug!("cache of {key} not saved: {bytes} bytes, over the budget");
            return;
        }
        while self.bytes + bytes > self.budget {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.bytes(),
                None => break,
            }
        }
        if let Some((_, evicted)) = self.entries.push(key, value) {
            self.bytes -= evicted.bytes();
        }
        self.bytes += bytes;
    }

    /// Takes `key`'s entry out, if there is one.
    fn take(&mut self, key: &str) -> Option<V> {
        let value = self.entries.pop(key)?;
        self.bytes -= value.bytes();
        Some(value)
    }

    fn peek(&self, key: &str) -> Option<&V> {
        self.entries.peek(key)
    }
}

/// Which document's cache the context holds, and the others' saved caches.
pub(crate) struct Slots {
    /// The document whose tokens the context holds.
    current: String,
    /// Other documents' saved caches; `None` when only one is kept warm.
    saved: Option<Saved<WarmState>>,
}

impl Slots {
    /// Slots for `warm_states` documents, the one in the context included, whose
    /// saved states take at most `byte_budget` bytes together.
    pub(crate) fn new(warm_states: u32, byte_budget: usize) -> Slots {
        let saved = NonZeroUsize::new(warm_states.saturating_sub(1) as usize);
        Slots {
            current: String::new(),
            saved: saved.map(|capacity| Saved::new(capacity, byte_budget)),
        }
    }

    /// Whether caches of several documents are kept (else switching forgets one).
    pub(crate) fn keeps_several(&self) -> bool {
        self.saved.is_some()
    }

    /// The tokens cached for `document`, whose cache `target` holds or is saved.
    pub(crate) fn tokens_of<'s>(&'s self, document: &str, target: &'s Sequence<'_>) -> &'s [Token] {
        if self.current == document {
            return &target.cached;
        }
        self.saved
            .as_ref()
            .and_then(|saved| saved.peek(document))
            .map_or(&[], |warm| &warm.tokens)
    }

    /// Drops the saved cache of `document`, if there is one.
    pub(crate) fn discard(&mut self, document: &str) {
        if let Some(saved) = &mut self.saved {
            saved.take(document);
        }
    }

    /// Makes `document` the one in `target`: saves the current document's cache and
    /// restores `document`'s, if it was saved. Says whether a cache was restored.
    pub(crate) fn switch_to(&mut self, document: &str, target: &mut Sequence<'_>) -> bool {
        if self.current == document {
            return false;
        }
        let previous = std::mem::replace(&mut self.current, document.to_owned());
        let Some(saved) = &mut self.saved else {
            target.forget();
            return false;
        };
        // Out first, so that saving the previous one cannot evict it.
        let restored = saved.take(document);
        if !target.cached.is_empty() && !target.shift_pending {
            match target.context.state_seq_get(0, LlamaStateSeqFlags::empty()) {
                Ok(state) => {
                    let tokens = std::mem::take(&mut target.cached);
                    saved.put(previous, WarmState { tokens, state });
                }
                Err(e) => tracing::debug!("cache of {previous} not saved: {e}"),
            }
        }
        target.forget();
        let Some(warm) = restored else {
            return false;
        };
        match target.context.state_seq_set(&warm.state, 0) {
            Ok(()) => {
                target.cached = warm.tokens;
                true
            }
            Err(e) => {
                tracing::debug!("cache of {document} not restored: {e}");
                target.forget();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weighed for usize {
        fn bytes(&self) -> usize {
            *self
        }
    }

    fn keys(saved: &Saved<usize>) -> Vec<&str> {
        saved.entries.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn saved_states_stay_within_their_byte_budget_least_recent_first() {
        let mut saved = Saved::new(NonZeroUsize::new(8).unwrap(), 100);
        saved.put("a".into(), 40);
        saved.put("b".into(), 40);
        assert_eq!(saved.bytes, 80);
        // c does not fit beside both: a, the least recent, goes.
        saved.put("c".into(), 30);
        assert_eq!(keys(&saved), ["c", "b"]);
        assert_eq!(saved.bytes, 70);
        // One over the budget alone is not kept, and costs the others nothing.
        saved.put("huge".into(), 101);
        assert_eq!(keys(&saved), ["c", "b"]);
        // Saving a key again replaces its bytes.
        saved.put("b".into(), 10);
        assert_eq!(saved.bytes, 40);
        assert_eq!(saved.take("c"), Some(30));
        assert_eq!(saved.bytes, 10);
        assert_eq!(saved.take("c"), None);
    }

    #[test]
    fn the_entry_count_still_bounds_the_saved_states() {
        let mut saved = Saved::new(NonZeroUsize::new(2).unwrap(), 1000);
        for key in ["a", "b", "c"] {
            saved.put(key.into(), 10);
        }
        assert_eq!(keys(&saved), ["c", "b"]);
        assert_eq!(saved.bytes, 20);
    }
}
