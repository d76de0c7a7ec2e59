//! Prompt templates: how a model family wants its fill-in-the-middle prompt laid
//! out, found from the loaded model's vocabulary or set by the user.
//!
//! A [`Template`] is a list of [`Part`]s — literal tokens, the text before the
//! cursor, the text after it — plus how other files are shown ([`FileForm`]) and the
//! tokens that end an answer. Detection reads only the vocabulary, through the
//! [`Vocabulary`] trait, so it is tested with fake vocabularies and with small
//! vocabulary-only GGUF files.
//!
//! Invariant: a family is chosen only when every token its layout needs exists in
//! the vocabulary as one token; otherwise detection moves on, ending at prefix-only,
//! which every model can do.

use std::fmt;

use crate::tokens::{Token, Tokenizer};

/// What the template stage needs of a model's vocabulary.
pub trait Vocabulary: Tokenizer {
    /// The token spelled exactly `text` (a special or added token), if there is one.
    fn token_for(&self, text: &str) -> Option<Token>;
    /// Tokenizes `text`, turning special-token spellings in it into those tokens.
    fn tokenize_special(&self, text: &str) -> Vec<Token>;
    /// The beginning-of-sequence token, when the model wants one.
    fn bos(&self) -> Option<Token>;
    /// llama.cpp's FIM prefix, suffix and middle tokens, when it found all three.
    fn fim(&self) -> Option<[Token; 3]>;
    /// llama.cpp's file-separator and repository-name tokens.
    fn fim_files(&self) -> (Option<Token>, Option<Token>);
}

/// The model families inkling knows the prompt format of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Qwen2.5-Coder: `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>`, repository form
    /// with `<|repo_name|>` and `<|file_sep|>`.
    Qwen,
    /// StarCoder, StarCoder2, SantaCoder: `<fim_prefix>P<fim_suffix>S<fim_middle>`,
    /// `<file_sep>` between files (StarCoder2).
    StarCoder,
    /// CodeLlama: `▁<PRE>P▁<SUF>S▁<MID>`, ending at `▁<EOT>`.
    CodeLlama,
    /// DeepSeek-Coder: `<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>`.
    DeepSeek,
    /// Codestral: suffix first, `[SUFFIX]S[PREFIX]P`.
    Codestral,
    /// CodeGemma: Qwen's FIM spelling, `<|file_separator|>` between files and at the end.
    CodeGemma,
    /// Another model with FIM tokens llama.cpp recognises: prefix-suffix-middle.
    Generic,
    /// A model without FIM tokens (the default model): the text before the cursor alone.
    PrefixOnly,
    /// A template from the configuration.
    Custom,
}

impl Family {
    /// The name used in the configuration and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Family::Qwen => "qwen",
            Family::StarCoder => "starcoder",
            Family::CodeLlama => "codellama",
            Family::DeepSeek => "deepseek",
            Family::Codestral => "codestral",
            Family::CodeGemma => "codegemma",
            Family::Generic => "generic",
            Family::PrefixOnly => "prefix-only",
            Family::Custom => "custom",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One piece of a FIM layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// These tokens, as they are.
    Tokens(Vec<Token>),
    /// The text before the cursor (with what the prompt stage puts ahead of it).
    Prefix,
    /// The text after the cursor.
    Suffix,
}

/// How material from other files is shown to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileForm {
    /// The repository form: `[repo_name]name\n` once, then `sep path\n text` per file
    /// and `sep path\n` before the current file's FIM parts.
    Separators {
        /// Starts the repository name, when the family has one.
        repo: Option<Token>,
        /// Starts each file.
        sep: Token,
    },
    /// As comments at the start of the text before the cursor.
    Comments,
}

/// How prompts are laid out for the loaded model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Which family this is.
    pub family: Family,
    /// The beginning-of-sequence token, when the model wants one (Gemma does: without
    /// it its output degenerates into repetition).
    pub bos: Option<Token>,
    /// The layout after the other files' material.
    pub parts: Vec<Part>,
    /// How other files are shown.
    pub files: FileForm,
    /// Tokens that end an answer, besides the vocabulary's end-of-generation tokens.
    pub stop: Vec<Token>,
}

impl Template {
    /// The prefix-only template: what every model can do.
    pub fn prefix_only(bos: Option<Token>) -> Template {
        Template {
            family: Family::PrefixOnly,
            bos,
            parts: vec![Part::Prefix],
            files: FileForm::Comments,
            stop: Vec::new(),
        }
    }
}

/// The token spellings of a family.
struct Spelling {
    family: Family,
    /// Alternative spellings of the prefix, suffix and middle tokens; an empty middle
    /// list means the family has no middle token (generation follows the prefix).
    prefix: &'static [&'static str],
    suffix: &'static [&'static str],
    middle: &'static [&'static str],
    /// Whether the suffix comes first.
    suffix_first: bool,
    /// Tokens that must also exist for the vocabulary to be this family's.
    marker: &'static [&'static str],
    repo: &'static [&'static str],
    sep: &'static [&'static str],
    stop: &'static [&'static str],
}

/// The families in detection order: CodeGemma before Qwen, whose FIM spelling it shares.
const SPELLINGS: [Spelling; 6] = [
    Spelling {
        family: Family::CodeGemma,
        prefix: &["<|fim_prefix|>"],
        suffix: &["<|fim_suffix|>"],
        middle: &["<|fim_middle|>"],
        suffix_first: false,
        marker: &["<|file_separator|>"],
        repo: &[],
        sep: &["<|file_separator|>"],
        stop: &["<|file_separator|>"],
    },
    Spelling {
        family: Family::Qwen,
        prefix: &["<|fim_prefix|>"],
        suffix: &["<|fim_suffix|>"],
        middle: &["<|fim_middle|>"],
        suffix_first: false,
        marker: &[],
        repo: &["<|repo_name|>"],
        sep: &["<|file_sep|>"],
        stop: &[
            "<|endoftext|>",
            "<|file_sep|>",
            "<|fim_pad|>",
            "<|repo_name|>",
        ],
    },
    Spelling {
        family: Family::StarCoder,
        prefix: &["<fim_prefix>"],
        suffix: &["<fim_suffix>"],
        middle: &["<fim_middle>"],
        suffix_first: false,
        marker: &[],
        repo: &["<repo_name>"],
        sep: &["<file_sep>"],
        stop: &["<|endoftext|>", "<file_sep>", "<fim_pad>"],
    },
    Spelling {
        family: Family::CodeLlama,
        prefix: &["▁<PRE>", "<PRE>"],
        suffix: &["▁<SUF>", "<SUF>"],
        middle: &["▁<MID>", "<MID>"],
        suffix_first: false,
        marker: &[],
        repo: &[],
        sep: &[],
        stop: &["▁<EOT>", "<EOT>"],
    },
    Spelling {
        family: Family::DeepSeek,
        prefix: &["<｜fim▁begin｜>"],
        suffix: &["<｜fim▁hole｜>"],
        middle: &["<｜fim▁end｜>"],
        suffix_first: false,
        marker: &[],
        repo: &[],
        sep: &[],
        stop: &["<｜end▁of▁sentence｜>", "<|EOT|>"],
    },
    Spelling {
        family: Family::Codestral,
        prefix: &["[PREFIX]"],
        suffix: &["[SUFFIX]"],
        middle: &[],
        suffix_first: true,
        marker: &[],
        repo: &[],
        sep: &[],
        stop: &[],
    },
];

/// A family's FIM layout spelled as text, for a server that tokenizes the prompt
/// itself (a remote engine): the same spellings detection looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FimText {
    /// Opens the text before the cursor.
    pub prefix: &'static str,
    /// Opens the text after the cursor.
    pub suffix: &'static str,
    /// Ends the prompt (empty when the family has no middle marker).
    pub middle: &'static str,
    /// Whether the suffix comes first.
    pub suffix_first: bool,
}

impl FimText {
    /// The layout of the family named `name` (see [`Family::name`]), if it has one.
    pub fn of(name: &str) -> Option<FimText> {
        // The plain spelling (CodeLlama's without SentencePiece's `▁`) is listed last.
        let plain = |spellings: &[&'static str]| spellings.last().copied().unwrap_or("");
        SPELLINGS
            .iter()
            .find(|s| s.family.name() == name)
            .map(|s| FimText {
                prefix: plain(s.prefix),
                suffix: plain(s.suffix),
                middle: plain(s.middle),
                suffix_first: s.suffix_first,
            })
    }

    /// The prompt for a cursor between `prefix` and `suffix`.
    pub fn prompt(&self, prefix: &str, suffix: &str) -> String {
        let (p, s, m) = (self.prefix, self.suffix, self.middle);
        if self.suffix_first {
            format!("{s}{suffix}{p}{prefix}{m}")
        } else {
            format!("{p}{prefix}{s}{suffix}{m}")
        }
    }
}

/// Why a configured template cannot be used with the loaded model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// The template for the model behind `vocab`: `configured` is the user's choice
/// (`None` or `"auto"`: detect; a family name; or a custom template with `{prefix}`
/// and optionally `{suffix}` placeholders, special tokens spelled out).
pub fn resolve(
    vocab: &impl Vocabulary,
    configured: Option<&str>,
) -> Result<Template, TemplateError> {
    match configured.map(str::trim) {
        None | Some("" | "auto") => Ok(detect(vocab)),
        Some(name) if name == Family::PrefixOnly.name() => Ok(Template::prefix_only(vocab.bos())),
        Some(text) if text.contains("{prefix}") => {
            check(text)?;
            Ok(custom(vocab, text))
        }
        Some(name) => {
            let spelling = spelling_of(name)?;
            from_spelling(vocab, spelling).map_err(|missing| {
                TemplateError(format!(
                    "template `{name}` needs the token {missing}, which this model's vocabulary lacks"
                ))
            })
        }
    }
}

/// Whether [`resolve`] takes the setting `configured` whatever the model: `auto`, a
/// family's name, or a custom template with `{prefix}` once and `{suffix}` at most
/// once (only whether the model has a family's tokens is left to the model).
pub fn check(configured: &str) -> Result<(), TemplateError> {
    match configured.trim() {
        "" | "auto" => Ok(()),
        name if name == Family::PrefixOnly.name() => Ok(()),
        text if text.contains("{prefix}") => {
            match ["{prefix}", "{suffix}"]
                .into_iter()
                .find(|placeholder| text.matches(placeholder).count() > 1)
            {
                Some(placeholder) => Err(TemplateError(format!(
                    "the template has {placeholder} twice"
                ))),
                None => Ok(()),
            }
        }
        name => spelling_of(name).map(|_| ()),
    }
}

/// The spelling of the family named `name`.
fn spelling_of(name: &str) -> Result<&'static Spelling, TemplateError> {
    SPELLINGS
        .iter()
        .find(|s| s.family.name() == name)
        .ok_or_else(|| {
            TemplateError(format!(
                "unknown template `{name}`: use auto, prefix-only, qwen, starcoder, \
                 codellama, deepseek, codestral, codegemma, or a template with {{prefix}}"
            ))
        })
}

/// Detects the family from the vocabulary (see the module invariant).
pub fn detect(vocab: &impl Vocabulary) -> Template {
    if let Some(template) = SPELLINGS.iter().find_map(|s| from_spelling(vocab, s).ok()) {
        return template;
    }
    match vocab.fim() {
        Some([prefix, suffix, middle]) => {
            let (sep, repo) = vocab.fim_files();
            Template {
                family: Family::Generic,
                bos: vocab.bos(),
                parts: vec![
                    Part::Tokens(vec![prefix]),
                    Part::Prefix,
                    Part::Tokens(vec![suffix]),
                    Part::Suffix,
                    Part::Tokens(vec![middle]),
                ],
                files: sep.map_or(FileForm::Comments, |sep| FileForm::Separators { repo, sep }),
                stop: Vec::new(),
            }
        }
        None => Template::prefix_only(vocab.bos()),
    }
}

/// The family's template, or the first spelling of a token it needs and lacks.
fn from_spelling(vocab: &impl Vocabulary, spelling: &Spelling) -> Result<Template, &'static str> {
    let find = |alternatives: &[&'static str]| alternatives.iter().find_map(|s| vocab.token_for(s));
    let need = |alternatives: &[&'static str]| find(alternatives).ok_or(alternatives[0]);
    for marker in spelling.marker {
        vocab.token_for(marker).ok_or(*marker)?;
    }
    let prefix = need(spelling.prefix)?;
    let suffix = need(spelling.suffix)?;
    let middle = match spelling.middle {
        [] => None,
        alternatives => Some(need(alternatives)?),
    };
    let mut parts = if spelling.suffix_first {
        vec![
            Part::Tokens(vec![suffix]),
            Part::Suffix,
            Part::Tokens(vec![prefix]),
            Part::Prefix,
        ]
    } else {
        vec![
            Part::Tokens(vec![prefix]),
            Part::Prefix,
            Part::Tokens(vec![suffix]),
            Part::Suffix,
        ]
    };
    parts.extend(middle.map(|m| Part::Tokens(vec![m])));
    let files = match find(spelling.sep) {
        Some(sep) => FileForm::Separators {
            repo: find(spelling.repo),
            sep,
        },
        None => FileForm::Comments,
    };
    Ok(Template {
        family: spelling.family,
        bos: vocab.bos(),
        parts,
        files,
        stop: spelling
            .stop
            .iter()
            .filter_map(|s| vocab.token_for(s))
            .collect(),
    })
}

/// A template written by the user: literal text (special tokens parsed) around the
/// `{prefix}` and `{suffix}` placeholders.
fn custom(vocab: &impl Vocabulary, text: &str) -> Template {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next = [("{prefix}", Part::Prefix), ("{suffix}", Part::Suffix)]
            .into_iter()
            .filter_map(|(placeholder, part)| {
                rest.find(placeholder).map(|at| (at, placeholder, part))
            })
            .min_by_key(|(at, _, _)| *at);
        let Some((at, placeholder, part)) = next else {
            parts.push(Part::Tokens(vocab.tokenize_special(rest)));
            break;
        };
        if at > 0 {
            parts.push(Part::Tokens(vocab.tokenize_special(&rest[..at])));
        }
        parts.push(part);
        rest = &rest[at + placeholder.len()..];
    }
    Template {
        family: Family::Custom,
        bos: vocab.bos(),
        parts,
        files: FileForm::Comments,
        stop: Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A vocabulary of single characters (token = code point) plus named specials.
    #[derive(Default)]
    pub(crate) struct FakeVocab {
        pub specials: HashMap<&'static str, Token>,
        pub bos: Option<Token>,
    }

    impl FakeVocab {
        pub(crate) fn with(specials: &[&'static str]) -> FakeVocab {
            FakeVocab {
                specials: specials
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (*s, -10 - i as Token))
                    .collect(),
                bos: None,
            }
        }
    }

    impl Tokenizer for FakeVocab {
        fn tokenize(&self, text: &str) -> Vec<Token> {
            text.chars().map(|c| c as Token).collect()
        }
    }

    impl Vocabulary for FakeVocab {
        fn token_for(&self, text: &str) -> Option<Token> {
            self.specials.get(text).copied()
        }
        fn tokenize_special(&self, text: &str) -> Vec<Token> {
            match self.specials.get(text) {
                Some(&t) => vec![t],
                None => self.tokenize(text),
            }
        }
        fn bos(&self) -> Option<Token> {
            self.bos
        }
        fn fim(&self) -> Option<[Token; 3]> {
            None
        }
        fn fim_files(&self) -> (Option<Token>, Option<Token>) {
            (None, None)
        }
    }

    #[test]
    fn a_setting_is_checked_without_a_model() {
        for good in [
            "",
            "auto",
            "prefix-only",
            "qwen",
            "codegemma",
            "<a>{prefix}<b>{suffix}<c>",
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
        let twice = check("{prefix}{suffix}{suffix}").unwrap_err();
        assert_eq!(twice.to_string(), "the template has {suffix} twice");
        assert!(check("{prefix} {prefix}").is_err());
        assert!(
            check("no placeholders")
                .unwrap_err()
                .to_string()
                .contains("unknown template")
        );
    }

    #[test]
    fn families_are_told_apart_by_their_tokens() {
        let cases: [(&[&str], Family); 7] = [
            (
                &[
                    "<|fim_prefix|>",
                    "<|fim_suffix|>",
                    "<|fim_middle|>",
                    "<|file_sep|>",
                ],
                Family::Qwen,
            ),
            (
                &[
                    "<|fim_prefix|>",
                    "<|fim_suffix|>",
                    "<|fim_middle|>",
                    "<|file_separator|>",
                ],
                Family::CodeGemma,
            ),
            (
                &["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
                Family::StarCoder,
            ),
            (&["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"], Family::CodeLlama),
            (
                &["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"],
                Family::DeepSeek,
            ),
            (&["[PREFIX]", "[SUFFIX]"], Family::Codestral),
            (&["<|fim_prefix|>", "<|fim_suffix|>"], Family::PrefixOnly),
        ];
        for (specials, family) in cases {
            assert_eq!(
                detect(&FakeVocab::with(specials)).family,
                family,
                "{specials:?}"
            );
        }
    }

    #[test]
    fn codestral_puts_the_suffix_first_and_codellama_stops_at_eot() {
        let vocab = FakeVocab::with(&["[PREFIX]", "[SUFFIX]"]);
        let template = detect(&vocab);
        assert_eq!(
            template.parts,
            [
                Part::Tokens(vec![-11]),
                Part::Suffix,
                Part::Tokens(vec![-10]),
                Part::Prefix
            ]
        );
        let vocab = FakeVocab::with(&["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]);
        assert_eq!(detect(&vocab).stop, [-13]);
    }

    #[test]
    fn configured_templates_override_detection() {
        let vocab = FakeVocab::with(&["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]);
        assert_eq!(
            resolve(&vocab, Some("prefix-only")).unwrap().family,
            Family::PrefixOnly
        );
        assert_eq!(
            resolve(&vocab, Some("auto")).unwrap().family,
            Family::StarCoder
        );
        let custom = resolve(
            &vocab,
            Some("<fim_suffix>{suffix}<fim_prefix>{prefix}<fim_middle>"),
        )
        .unwrap();
        assert_eq!(
            custom.parts,
            [
                Part::Tokens(vec![-11]),
                Part::Suffix,
                Part::Tokens(vec![-10]),
                Part::Prefix,
                Part::Tokens(vec![-12])
            ]
        );
        let error = resolve(&vocab, Some("qwen")).unwrap_err();
        assert!(error.0.contains("<|fim_prefix|>"), "{error}");
        assert!(
            resolve(&vocab, Some("gpt"))
                .unwrap_err()
                .0
                .contains("unknown template")
        );
        assert!(resolve(&vocab, Some("{prefix}{prefix}")).is_err());
    }

    #[test]
    fn fim_text_spells_the_families_layouts() {
        let qwen = FimText::of("qwen").unwrap();
        assert_eq!(
            qwen.prompt("a = ", "\nb"),
            "<|fim_prefix|>a = <|fim_suffix|>\nb<|fim_middle|>"
        );
        let codestral = FimText::of("codestral").unwrap();
        assert_eq!(codestral.prompt("P", "S"), "[SUFFIX]S[PREFIX]P");
        assert_eq!(FimText::of("codellama").unwrap().prefix, "<PRE>");
        assert_eq!(FimText::of("prefix-only"), None);
    }
}
