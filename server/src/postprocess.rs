//! The post-processing stage: when generation may stop, and what of the generated
//! text becomes the suggestion.
//!
//! Both halves are plain functions of text, so the engine can apply
//! [`StopRules::is_complete`] to every token as it streams and this module can be
//! tested without a model.

use crate::context::CompletionContext;

/// Rules that end a generation early, decided from the context before it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopRules {
    /// Stop at the end of the line: the cursor has code to its right, so a multi-line
    /// answer would push that code down.
    pub single_line: bool,
}

impl StopRules {
    /// The rules for a completion at `context`.
    pub fn for_context(context: &CompletionContext) -> StopRules {
        StopRules {
            single_line: context.has_text_right_of_cursor(),
        }
    }

    /// Whether `generated` (everything produced so far) already holds the whole answer.
    pub fn is_complete(&self, generated: &str) -> bool {
        self.single_line && generated.contains('\n')
    }
}

/// Turns generated text into the suggestion to show, or `None` when nothing useful is left.
pub fn finish(generated: &str, rules: &StopRules) -> Option<String> {
    let text = if rules.single_line {
        generated.split('\n').next().unwrap_or_default()
    } else {
        generated
    };
    let text = text.trim_end();
    (!text.trim().is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: StopRules = StopRules { single_line: true };
    const MULTI: StopRules = StopRules { single_line: false };

    #[test]
    fn code_right_of_the_cursor_means_one_line() {
        let mut ctx = CompletionContext {
            line_suffix: ")".into(),
            ..CompletionContext::default()
        };
        assert_eq!(StopRules::for_context(&ctx), SINGLE);
        ctx.line_suffix = "   ".into();
        assert_eq!(StopRules::for_context(&ctx), MULTI);
    }

    #[test]
    fn single_line_stops_and_cuts_at_the_line_end() {
        assert!(!SINGLE.is_complete("x + 1"));
        assert!(SINGLE.is_complete("x + 1\n    "));
        assert!(!MULTI.is_complete("x + 1\n    "));
        assert_eq!(finish("x + 1  \nmore", &SINGLE).as_deref(), Some("x + 1"));
    }

    #[test]
    fn multi_line_keeps_indentation_and_drops_trailing_space() {
        assert_eq!(
            finish("\n    return x\n\n", &MULTI).as_deref(),
            Some("\n    return x")
        );
    }

    #[test]
    fn blank_answers_are_dropped() {
        assert_eq!(finish(" \n\t\n", &MULTI), None);
        assert_eq!(finish("\nreturn", &SINGLE), None);
        assert_eq!(finish("", &MULTI), None);
    }
}
