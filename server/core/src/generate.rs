//! The seam between the completion pipeline and whatever generates text: the
//! in-process engine, or a remote engine. The pipeline builds a
//! [`CompletionRequest`] and awaits a [`Generation`] from a [`Backend`]; prompt
//! building, stop rules and post-processing stay with the pipeline and the
//! stages it hands over ([`CompletionContext`], [`StopRules`]), so every backend's
//! text is cut and checked the same way.
//!
//! Invariants every backend keeps:
//! - A set [`CancelFlag`] ends the generation at the next token (or, remotely,
//!   drops the request): the answer is then [`BackendError::Cancelled`].
//! - Text generated so far goes to [`CompletionRequest::partial`] as it grows,
//!   before post-processing; the final [`Generation::text`] extends the last of it.
//! - [`Backend::is_ready`] false means requests are answered
//!   [`BackendError::NotReady`] at once, never queued behind a load: a caller
//!   that can wait says so with [`Backend::ready_within`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::context::CompletionContext;
use crate::postprocess::{self, StopRules, Trigger};

/// Set to ask a backend to stop a request; cheap to clone and share.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks for the request to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether `other` is a clone of this flag (not merely in the same state).
    pub fn same_as(&self, other: &CancelFlag) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Where the text generated so far goes, each time it grows.
#[derive(Clone)]
pub struct TextSink(Arc<dyn Fn(&str) + Send + Sync>);

impl TextSink {
    /// A sink that calls `send` with the whole text so far.
    pub fn new(send: impl Fn(&str) + Send + Sync + 'static) -> TextSink {
        TextSink(Arc::new(send))
    }

    /// Hands over the text generated so far (up to a control character: see
    /// [`postprocess::before_control`]).
    pub fn send(&self, text: &str) {
        (self.0)(postprocess::before_control(text));
    }
}

impl fmt::Debug for TextSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TextSink")
    }
}

/// One completion to generate.
#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// The text around the cursor.
    pub context: CompletionContext,
    /// When to stop early.
    pub stop: StopRules,
    /// Most tokens to generate; 0 only brings the prompt into the cache.
    pub max_tokens: u32,
    /// Most time to spend on the prompt; `None` waits for all of it.
    pub prompt_time_limit: Option<Duration>,
    /// Most time to spend generating (after the prompt).
    pub generation_time_limit: Duration,
    /// Set when the request is no longer wanted.
    pub cancel: CancelFlag,
    /// The document the request is for (its URI): a backend keeps one warm cache
    /// per document and uses the one the request names.
    pub document: String,
    /// Receives the text generated so far after every token, when set.
    pub partial: Option<TextSink>,
    /// Work nobody waits for yet (a prefetch), counted apart.
    pub background: bool,
    /// Background work that must not throw away much of the document's cache: a
    /// prefetch guesses where the user goes next, while a warm follows where the user
    /// is (a file opened or focused), whose old cache is of no more use.
    pub keeps_cache: bool,
    /// How the request was triggered (a remote backend's policy depends on it).
    pub trigger: Trigger,
    /// Answers to generate (1: the greedy one alone); the others begin with the next
    /// most likely first tokens, within the same generation time limit.
    pub candidates: u32,
    /// Put the candidates in the order of how likely the model finds each followed by
    /// the text after the cursor (`candidates::following_text`).
    pub suffix_rescoring: bool,
    /// Start a one-line candidate with each of the context's `unbound_names` unless
    /// the greedy answer defines one, and offer those that define one first.
    pub unbound_seeds: bool,
    /// End the answer's first line before the first token the model is unsure of
    /// (a backend that knows its tokens' likelihoods decides what is unsure;
    /// [`StopReason::Unsure`]): accepting what it is sure of asks for the rest.
    pub stop_when_unsure: bool,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// The stop rules said the answer is complete.
    StopRule,
    /// The token limit was reached.
    TokenLimit,
    /// The generation time limit was reached.
    TimeLimit,
    /// The prompt time limit was reached before generation began.
    PromptTimeLimit,
    /// The context window is full.
    ContextFull,
    /// The model was unsure of the next token ([`CompletionRequest::stop_when_unsure`]).
    Unsure,
}

impl StopReason {
    /// Whether a limit ended the generation where it fell, not where the code does:
    /// its last line (of several) is cut, and is dropped ([`crate::postprocess::whole_lines`]).
    pub fn cuts_last_line(self) -> bool {
        matches!(self, StopReason::TokenLimit | StopReason::TimeLimit)
    }
}

/// The raw result of a generation, before post-processing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Generated text (invalid UTF-8 at a cut is dropped): the best candidate.
    pub text: String,
    /// The other candidates' texts, next best first (see
    /// [`CompletionRequest::candidates`]); each is cut where the stop rules end it.
    pub alternatives: Vec<String>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the previous request.
    pub reused_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// The length of `text` after each generated token, when the backend knows its
    /// tokens (empty otherwise): how many tokens the part of the text shown cost.
    pub token_ends: Vec<usize>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Time spent building the prompt (layout and tokenization).
    pub build_time: Duration,
    /// Time spent on the prompt (restoring the cache and decoding what it lacked).
    pub prompt_time: Duration,
    /// Time spent generating.
    pub generation_time: Duration,
    /// Whether the answer came from a shorter prompt, because too much of the full
    /// one was left to decode within the prompt time limit: the full one still wants
    /// warming.
    pub short_prompt: bool,
}

impl Generation {
    /// The text post-processing starts from: without its unfinished last line when a
    /// limit cut it ([`StopReason::cuts_last_line`]).
    pub fn text_to_finish(&self) -> &str {
        if self.stop_reason.cuts_last_line() {
            postprocess::whole_lines(&self.text)
        } else {
            &self.text
        }
    }

    /// How many of the generated tokens made the first `len` bytes of the text:
    /// counted from [`Generation::token_ends`], or in proportion to the text's
    /// length when the backend did not say.
    pub fn tokens_for(&self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        let tokens = if self.token_ends.is_empty() {
            (self.generated_tokens * len).div_ceil(self.text.len().max(1))
        } else {
            self.token_ends.partition_point(|&end| end < len) + 1
        };
        tokens.min(self.generated_tokens)
    }
}

/// Why a request got no generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The model is still loading, or failed to load.
    NotReady,
    /// The request was cancelled or superseded.
    Cancelled,
    /// The backend reported an error.
    Failed(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::NotReady => write!(f, "the model is not ready"),
            BackendError::Cancelled => write!(f, "the request was cancelled"),
            BackendError::Failed(e) => write!(f, "generation failed: {e}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// Something that turns a [`CompletionRequest`] into a [`Generation`]: the
/// in-process engine, a remote engine, or a fake in tests.
pub trait Backend: Send + Sync + 'static {
    /// Whether requests are served now (the model is loaded, the remote reachable).
    fn is_ready(&self) -> bool;

    /// Waits until requests are served (`true`), or the backend cannot serve them
    /// any more, or `limit` has passed (`false`).
    fn ready_within(&self, limit: Duration) -> impl Future<Output = bool> + Send;

    /// Generates the text for `request`, streaming it to `request.partial` as it
    /// grows and stopping when `request.cancel` is set.
    fn generate(
        &self,
        request: CompletionRequest,
    ) -> impl Future<Output = Result<Generation, BackendError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_for_a_length_count_the_tokens_that_made_it() {
        let generation = Generation {
            text: "abc\ndef".into(),
            alternatives: Vec::new(),
            prompt_tokens: 0,
            reused_tokens: 0,
            generated_tokens: 3,
            token_ends: vec![2, 4, 7],
            stop_reason: StopReason::StopRule,
            build_time: Duration::ZERO,
            prompt_time: Duration::ZERO,
            generation_time: Duration::ZERO,
            short_prompt: false,
        };
        assert_eq!(generation.tokens_for(0), 0);
        assert_eq!(generation.tokens_for(2), 1);
        assert_eq!(generation.tokens_for(3), 2);
        assert_eq!(generation.tokens_for(7), 3);
        let unknown = Generation {
            token_ends: Vec::new(),
            ..generation
        };
        assert_eq!(unknown.tokens_for(3), 2); // 3 tokens over 7 bytes, rounded up.
        assert_eq!(unknown.tokens_for(7), 3);
    }

    #[test]
    fn cancel_flag_is_shared_between_clones() {
        let flag = CancelFlag::default();
        let clone = flag.clone();
        assert!(!clone.is_cancelled());
        assert!(clone.same_as(&flag));
        assert!(!CancelFlag::default().same_as(&flag));
        flag.cancel();
        assert!(clone.is_cancelled());
    }
}
