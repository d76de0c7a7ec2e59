//! Token ids and the tokenizer trait, shared by the template and prompt stages
//! (which both need them, and so neither owns them).

/// A token id of the loaded model's vocabulary.
pub type Token = i32;

/// Turns text into token ids of some vocabulary, without adding special tokens.
pub trait Tokenizer {
    /// Tokenizes `text`, treating any special-token spelling in it as plain text.
    fn tokenize(&self, text: &str) -> Vec<Token>;
}
