//! Warm states: one KV cache per document. The context holds one document's cache
//! at a time; switching saves it (`state_seq_get`, with its tokens) into an LRU of
//! `warmStates - 1` entries and restores the next document's if it is there.
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

/// Which document's cache the context holds, and the others' saved caches.
pub(crate) struct Slots {
    /// The document whose tokens the context holds.
    current: String,
    /// Other documents' saved caches; `None` when only one is kept warm.
    saved: Option<LruCache<String, WarmState>>,
}

impl Slots {
    /// Slots for `warm_states` documents, the one in the context included.
    pub(crate) fn new(warm_states: u32) -> Slots {
        let saved = NonZeroUsize::new(warm_states.saturating_sub(1) as usize);
        Slots {
            current: String::new(),
            saved: saved.map(LruCache::new),
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
            saved.pop(document);
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
        let Some(warm) = saved.pop(document) else {
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
