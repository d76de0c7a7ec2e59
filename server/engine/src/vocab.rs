//! The loaded model's vocabulary as the prompt and template stages see it: a
//! [`Tokenizer`] and a [`Vocabulary`] over llama.cpp's vocabulary.
//!
//! Used on the engine thread, which owns the model; the tests load small
//! vocabulary-only GGUF files of each model family and check the prompts built for
//! them token by token.

use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;

use inkling_core::template::Vocabulary;
use inkling_core::tokens::{Token, Tokenizer};

/// A model's vocabulary, for the prompt and template stages.
pub struct VocabTokenizer<'m>(pub LlamaVocab<'m>);

impl Tokenizer for VocabTokenizer<'_> {
    fn tokenize(&self, text: &str) -> Vec<Token> {
        self.0
            .tokenize(text.as_bytes(), false, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }
}

impl Vocabulary for VocabTokenizer<'_> {
    fn token_for(&self, text: &str) -> Option<Token> {
        match self.0.tokenize(text.as_bytes(), false, true)[..] {
            [token]
                if self
                    .0
                    .text(token)
                    .is_some_and(|t| t.to_bytes() == text.as_bytes()) =>
            {
                Some(token.0)
            }
            _ => None,
        }
    }

    fn tokenize_special(&self, text: &str) -> Vec<Token> {
        self.0
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    fn bos(&self) -> Option<Token> {
        self.0.should_add_bos().then(|| self.0.bos().0)
    }

    fn fim(&self) -> Option<[Token; 3]> {
        let present = |t: LlamaToken| (t.0 >= 0).then_some(t.0);
        Some([
            present(self.0.fim_pre())?,
            present(self.0.fim_suf())?,
            present(self.0.fim_mid())?,
        ])
    }

    fn fim_files(&self) -> (Option<Token>, Option<Token>) {
        let present = |t: LlamaToken| (t.0 >= 0).then_some(t.0);
        (present(self.0.fim_sep()), present(self.0.fim_rep()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_gguf::{load, vocab_file};
    use inkling_core::context::{CompletionContext, Preamble, Snippet};
    use inkling_core::prompt::{Budget, build};
    use inkling_core::template::{Family, detect, resolve};

    fn bytes(text: &str) -> Vec<Token> {
        text.bytes().map(Token::from).collect()
    }

    /// The cursor mid-line in `def f(x):\n    return |x + 1\n`, with one chunk of
    /// another file.
    fn context() -> CompletionContext {
        CompletionContext {
            prefix: "def f(x):\n    return ".into(),
            suffix: "x + 1\n".into(),
            line_prefix: "    return ".into(),
            line_suffix: "x + 1".into(),
            preamble: Preamble {
                repository: "shop".into(),
                path: "f.py".into(),
                comment: "#".into(),
                outline: String::new(),
                snippets: vec![Snippet {
                    path: "g.py".into(),
                    source: "/shop/g.py".into(),
                    text: "y = 2\n".into(),
                }],
            },
            ..CompletionContext::default()
        }
    }

    /// Each family's vocabulary file is recognised, and its prompt is exactly the
    /// family's layout: special tokens by id, text as bytes; the healed last token
    /// (the space before the cursor) is left out.
    #[test]
    fn each_family_gets_its_layout_token_by_token() {
        let prefix = bytes("def f(x):\n    return");
        let suffix = bytes("x + 1\n");
        let cat = |parts: &[&[Token]]| parts.concat();
        let qwen_files = cat(&[
            &[261],
            &bytes("shop\n"),
            &[262],
            &bytes("g.py\ny = 2\n"),
            &[262],
            &bytes("f.py\n"),
        ]);
        let comment_prefix = cat(&[&bytes("# g.py\n# y = 2\n"), &prefix]);
        #[rustfmt::skip]
        // (file name, special tokens, add BOS, family, expected prompt)
        type Case<'a> = (&'a str, Vec<&'a str>, bool, Family, Vec<Token>);
        let cases: Vec<Case> = vec![
            (
                "qwen",
                vec![
                    "<|endoftext|>",
                    "<|eot|>",
                    "<|fim_prefix|>",
                    "<|fim_middle|>",
                    "<|fim_suffix|>",
                    "<|repo_name|>",
                    "<|file_sep|>",
                ],
                false,
                Family::Qwen,
                cat(&[&qwen_files, &[258], &prefix, &[260], &suffix, &[259]]),
            ),
            (
                "starcoder",
                vec![
                    "<|endoftext|>",
                    "<eos>",
                    "<fim_prefix>",
                    "<fim_middle>",
                    "<fim_suffix>",
                    "<repo_name>",
                    "<file_sep>",
                ],
                false,
                Family::StarCoder,
                cat(&[&qwen_files, &[258], &prefix, &[260], &suffix, &[259]]),
            ),
            (
                "codellama",
                vec!["<s>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"],
                true,
                Family::CodeLlama,
                cat(&[&[256, 258], &comment_prefix, &[259], &suffix, &[260]]),
            ),
            (
                "deepseek",
                vec![
                    "<｜begin▁of▁sentence｜>",
                    "<｜end▁of▁sentence｜>",
                    "<｜fim▁begin｜>",
                    "<｜fim▁hole｜>",
                    "<｜fim▁end｜>",
                ],
                true,
                Family::DeepSeek,
                cat(&[&[256, 258], &comment_prefix, &[259], &suffix, &[260]]),
            ),
            (
                "codestral",
                vec!["<s>", "</s>", "[PREFIX]", "[SUFFIX]"],
                true,
                Family::Codestral,
                cat(&[&[256, 259], &suffix, &[258], &comment_prefix]),
            ),
            (
                "codegemma",
                vec![
                    "<bos>",
                    "<eos>",
                    "<|fim_prefix|>",
                    "<|fim_middle|>",
                    "<|fim_suffix|>",
                    "<|file_separator|>",
                ],
                true,
                Family::CodeGemma,
                cat(&[
                    &[256, 261],
                    &bytes("g.py\ny = 2\n"),
                    &[261],
                    &bytes("f.py\n"),
                    &[258],
                    &prefix,
                    &[260],
                    &suffix,
                    &[259],
                ]),
            ),
            (
                "prefix-only",
                vec!["<bos>", "<eos>"],
                true,
                Family::PrefixOnly,
                cat(&[&[256], &comment_prefix]),
            ),
        ];
        for (name, specials, add_bos, family, expected) in cases {
            let model = load(&vocab_file(name, &specials, add_bos));
            let vocab = VocabTokenizer(model.vocab());
            let template = detect(&vocab);
            assert_eq!(template.family, family, "{name}");
            let prompt = build(&context(), &template, Budget::default(), &vocab);
            assert_eq!(prompt.tokens, expected, "{name}");
            assert_eq!(prompt.healed, Some(Token::from(b' ')), "{name}");
        }
    }

    #[test]
    fn stop_tokens_and_custom_templates_use_the_vocabulary() {
        let model = load(&vocab_file(
            "codellama-stop",
            &["<s>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"],
            true,
        ));
        let vocab = VocabTokenizer(model.vocab());
        assert_eq!(detect(&vocab).stop, [261]);
        let custom = resolve(&vocab, Some("▁<SUF>{suffix}▁<PRE>{prefix}▁<MID>")).unwrap();
        let prompt = build(&context(), &custom, Budget::default(), &vocab);
        let expected = [
            &[256, 259][..],
            &bytes("x + 1\n"),
            &[258],
            &bytes("# g.py\n# y = 2\ndef f(x):\n    return"),
            &[260],
        ]
        .concat();
        assert_eq!(prompt.tokens, expected);
        let error = resolve(&vocab, Some("qwen")).unwrap_err();
        assert!(error.0.contains("<|fim_prefix|>"), "{error}");
    }
}
