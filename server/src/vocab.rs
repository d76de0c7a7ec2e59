//! The loaded model's vocabulary as the prompt and template stages see it: a
//! [`Tokenizer`] and a [`Vocabulary`] over llama.cpp's vocabulary.
//!
//! Used on the engine thread, which owns the model; the tests load small
//! vocabulary-only GGUF files of each model family and check the prompts built for
//! them token by token.

use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;

use crate::prompt::{Token, Tokenizer};
use crate::template::Vocabulary;

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
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::model::LlamaModel;
    use llama_cpp_2::model::params::LlamaModelParams;

    use super::*;
    use crate::context::{CompletionContext, Preamble, Snippet};
    use crate::prompt::{Budget, build};
    use crate::template::{Family, detect, resolve};

    /// A GGUF metadata value.
    enum Value {
        Bool(bool),
        U32(u32),
        Str(String),
        Strs(Vec<String>),
        I32s(Vec<i32>),
    }

    /// Writes a GGUF (version 3) file with metadata `kvs` and no tensors.
    fn write_gguf(path: &Path, kvs: &[(&str, Value)]) {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for (key, value) in kvs {
            string(&mut out, key);
            match value {
                Value::Bool(b) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(u8::from(*b));
                }
                Value::U32(n) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(n.to_le_bytes());
                }
                Value::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    string(&mut out, s);
                }
                Value::Strs(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for item in items {
                        string(&mut out, item);
                    }
                }
                Value::I32s(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for item in items {
                        out.extend(item.to_le_bytes());
                    }
                }
            }
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        std::fs::write(path, out).unwrap();
    }

    /// GPT-2's printable spelling of each byte, in byte order: token `b` is byte `b`.
    fn byte_tokens() -> Vec<String> {
        let printable = |b: u32| {
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b)
        };
        let mut extra = 0;
        (0..256u32)
            .map(|b| {
                if printable(b) {
                    char::from_u32(b).unwrap().to_string()
                } else {
                    extra += 1;
                    char::from_u32(255 + extra).unwrap().to_string()
                }
            })
            .collect()
    }

    /// A vocabulary-only GGUF: the 256 byte tokens, then `specials` (ids 256, 257, …)
    /// as control tokens; the first special is BOS when `add_bos`.
    fn vocab_file(name: &str, specials: &[&str], add_bos: bool) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("inkling-vocab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.gguf"));
        let mut tokens = byte_tokens();
        tokens.extend(specials.iter().map(|s| s.to_string()));
        let types: Vec<i32> = (0..tokens.len())
            .map(|i| if i < 256 { 1 } else { 3 })
            .collect();
        write_gguf(
            &path,
            &[
                ("general.architecture", Value::Str("llama".into())),
                ("tokenizer.ggml.model", Value::Str("gpt2".into())),
                ("tokenizer.ggml.pre", Value::Str("default".into())),
                ("tokenizer.ggml.tokens", Value::Strs(tokens)),
                ("tokenizer.ggml.token_type", Value::I32s(types)),
                ("tokenizer.ggml.merges", Value::Strs(Vec::new())),
                ("tokenizer.ggml.bos_token_id", Value::U32(256)),
                ("tokenizer.ggml.eos_token_id", Value::U32(257)),
                ("tokenizer.ggml.add_bos_token", Value::Bool(add_bos)),
            ],
        );
        path
    }

    fn backend() -> &'static LlamaBackend {
        static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
        BACKEND.get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(false),
            );
            LlamaBackend::init().expect("llama backend")
        })
    }

    fn load(path: &Path) -> LlamaModel {
        let params = LlamaModelParams::default().with_vocab_only(true);
        LlamaModel::load_from_file(backend(), path, &params).expect("vocabulary-only model loads")
    }

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
