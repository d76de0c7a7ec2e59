//! inkling's core: the pure text stages of a completion, with no I/O runtime, no
//! model and no protocol (see `ARCHITECTURE.md`).
//!
//! [`documents`] → [`context`] (with [`syntax`] and [`workspace`]) → [`prompt`]
//! (with [`template`] and [`tokens`]) → a [`generate::Backend`] → [`postprocess`]
//! (with [`degenerate`]);
//! [`typed_through`] remembers recent answers. Positions here are char and byte
//! offsets only; line/column encodings belong to the protocol edge.

pub mod candidates;
pub mod context;
pub mod degenerate;
pub mod documents;
pub mod generate;
pub mod postprocess;
pub mod prompt;
pub mod syntax;
pub mod template;
pub mod tokens;
pub mod typed_through;
pub mod unbound;
pub mod workspace;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, even if a panic elsewhere poisoned it: the data behind inkling's
/// locks is consistent between statements (replaced whole, never left half-updated).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
