//! The post-processing stage: whether to suggest at all, when generation may
//! stop, and what of the generated text becomes the suggestion.
//!
//! Three plain functions of text, testable without a model:
//! - [`plan`] decides from the context whether to suggest, and one line or several;
//! - [`StopRules::end_of_answer`] runs on every streamed token, so generation ends
//!   as soon as the answer is complete (and [`finish`] cuts at the same place);
//! - [`finish`] turns the generated text into the suggestion.
//!
//! Invariant: with [`Options::enabled`] off, only the basic rules apply
//! (end-of-generation and limits in the engine, the end of the line when code is
//! right of the cursor, trailing white space trimmed): the quality benchmark
//! compares the two.

use crate::context::CompletionContext;
use crate::degenerate::{self, Strings};

/// How the request was triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The user asked (a key binding, a menu): may take longer and return alternatives.
    Invoked,
    /// Typing triggered it: must be fast.
    Automatic,
}

/// User settings of this stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Apply the stop rules and filters beyond the basic ones.
    pub enabled: bool,
    /// Automatic requests suggest inside comments too; an invoked
    /// request is answered there whatever this says, since the user asked.
    pub in_comments: bool,
    /// Automatic requests in a line already begun end before the first token the
    /// model is unsure of ([`Plan::stop_when_unsure`]).
    pub stop_when_unsure: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            enabled: true,
            in_comments: true,
            stop_when_unsure: true,
        }
    }
}

/// Why no suggestion is made at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The cursor is inside a word that continues right of it.
    MidWord,
    /// The cursor is in a comment and comment completions are off.
    InComment,
}

/// The shape of the answer to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Several lines may be suggested.
    pub multi_line: bool,
    /// Most lines in a multi-line answer.
    pub max_lines: usize,
    /// Offer the first line alone as a second item.
    pub alternatives: bool,
    /// End the answer before the first token the model is unsure of: for automatic
    /// requests once the user types in a line (text before the cursor on it). At a
    /// line's start the whole statement shows what the model proposes; in a line
    /// begun, the user is writing one that is theirs, and a start that is right
    /// (accepted, then the rest asked for) saves more than a whole line that is
    /// wrong at its end.
    pub stop_when_unsure: bool,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Columns of leading white space (a tab counts as one: only comparisons matter).
fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

/// Whether a line's code ends by opening a block (`:` in Python, `{`, `(`, `[`, `=>`).
fn opens_block(line: &str) -> bool {
    let code = line.trim_end();
    code.ends_with([':', '{', '(', '[']) || code.ends_with("=>")
}

/// What an editor puts at the start of the next line when the user presses Enter at
/// the end of `line` (the last line of `prefix`, in `language_id`): the line's
/// indentation, a level deeper after a line that opens a block, a level shallower
/// after a Python statement that ends one. The level is the prefix's own unit (a
/// tab, or its smallest indentation in spaces).
pub fn next_line_indent(prefix: &str, language_id: &str) -> String {
    let line = prefix.rsplit('\n').next().unwrap_or_default();
    let indent = &line[..line.len() - line.trim_start().len()];
    let unit = indent_unit(prefix);
    let code = line.trim();
    let ends_block = language_id == "python"
        && ["return", "pass", "raise", "break", "continue"]
            .iter()
            .any(|word| code == *word || code.starts_with(&format!("{word} ")));
    if opens_block(line) {
        format!("{indent}{unit}")
    } else if ends_block {
        indent
            .strip_suffix(unit.as_str())
            .unwrap_or(indent)
            .to_owned()
    } else {
        indent.to_owned()
    }
}

/// One level of indentation in `text`: a tab if a line starts with one, else the
/// smallest indentation in spaces (2 to 8), 4 when no line is indented.
fn indent_unit(text: &str) -> String {
    if text.lines().any(|l| l.starts_with('\t')) {
        return "\t".into();
    }
    let smallest = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(4)
        .clamp(2, 8);
    " ".repeat(smallest)
}

/// Decides whether to suggest at `context`, and how much.
pub fn plan(context: &CompletionContext, trigger: Trigger, options: Options) -> Result<Plan, Skip> {
    let before = context.line_prefix.chars().next_back();
    let after = context.line_suffix.chars().next();
    if options.enabled && before.is_some_and(is_word_char) && after.is_some_and(is_word_char) {
        return Err(Skip::MidWord);
    }
    if options.enabled
        && context.syntax.in_comment
        && !options.in_comments
        && trigger == Trigger::Automatic
    {
        return Err(Skip::InComment);
    }
    let multi_line = !context.has_text_right_of_cursor() && starts_block_or_statement(context);
    let max_lines = match trigger {
        Trigger::Automatic => 8,
        Trigger::Invoked => 24,
    };
    Ok(Plan {
        multi_line,
        max_lines,
        alternatives: trigger == Trigger::Invoked && multi_line,
        stop_when_unsure: options.stop_when_unsure
            && trigger == Trigger::Automatic
            && !context.line_prefix.trim().is_empty(),
    })
}

/// Whether the cursor starts an empty block body or a new statement at the end of a
/// block (the cases where several lines are wanted), or ends a line that opens a block.
fn starts_block_or_statement(context: &CompletionContext) -> bool {
    let line = &context.line_prefix;
    if !line.trim().is_empty() {
        return opens_block(line);
    }
    let previous = line_above(context);
    let next = next_code_line(context);
    let block_start = previous.is_some_and(opens_block);
    let block_end = next.is_none_or(|next| {
        indent_of(next) < line.len() || next.trim_start().starts_with(['}', ')', ']'])
    });
    block_start || block_end
}

/// The last line with code before the cursor line.
fn line_above(context: &CompletionContext) -> Option<&str> {
    context
        .prefix
        .lines()
        .rev()
        .skip(1)
        .find(|l| !l.trim().is_empty())
}

/// The first line after the cursor line that has code.
fn next_code_line(context: &CompletionContext) -> Option<&str> {
    context
        .suffix
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty())
}

/// Rules that end a generation, decided from the context before it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopRules {
    /// The full rule set (see [`Options::enabled`]).
    smart: bool,
    /// Several lines may be suggested.
    multi_line: bool,
    /// Most lines.
    max_lines: usize,
    /// Lines after the first must be indented at least this much.
    block_indent: usize,
    /// Lines indented less than this leave the enclosing scope (tree-sitter).
    scope_indent: usize,
    /// The first line with code after the cursor line, trimmed.
    next_line: Option<String>,
    /// Closing brackets the suggestion may emit, innermost first: brackets opened
    /// before the cursor that the text after it does not close.
    closers_needed: Vec<char>,
    /// The cursor line up to the cursor: the answer's first line continues it.
    line_prefix: String,
    /// The last line with code above the cursor line, which the answer must not repeat.
    line_above: Option<String>,
    /// The string lexer at the start of the cursor line, when the language's strings
    /// end on their line, nothing is right of the cursor, and the lexer reading the
    /// line prefix sees the string or comment tree-sitter puts the cursor in (one
    /// opened lines above would fool it).
    strings: Option<Strings>,
}

impl StopRules {
    /// Whether answers are shaped by the full rule set: without it, they are shown as
    /// generated.
    pub fn shapes_answers(&self) -> bool {
        self.smart
    }

    /// The rules for a completion at `context`.
    pub fn new(context: &CompletionContext, plan: &Plan, options: Options) -> StopRules {
        let line = &context.line_prefix;
        let block_indent = if line.trim().is_empty() {
            line.len()
        } else if plan.multi_line && opens_block(line) {
            indent_of(line) + 1 // The body of the block the line opens.
        } else {
            indent_of(line)
        };
        StopRules {
            smart: options.enabled,
            multi_line: plan.multi_line || !options.enabled && !context.has_text_right_of_cursor(),
            max_lines: plan.max_lines,
            block_indent,
            // When the cursor sits on a blank line left of the body it is in (not yet
            // indented), the body's indentation, not the cursor's, bounds the answer.
            scope_indent: context
                .syntax
                .scope_indent
                .filter(|&scope| line.trim().is_empty() && scope > line.len())
                .unwrap_or(0),
            next_line: next_code_line(context).map(|l| l.trim().to_owned()),
            closers_needed: closers_needed(&context.prefix, &context.suffix),
            line_prefix: line.clone(),
            line_above: line_above(context).map(str::to_owned),
            strings: Strings::new(&context.language_id).filter(|strings| {
                let (string, comment) = strings.in_string_or_comment(line);
                let syntax = &context.syntax;
                !context.has_text_right_of_cursor()
                    && (string || !syntax.in_string)
                    && (comment || !syntax.in_comment)
            }),
        }
    }

    /// Whether several lines may be suggested.
    pub fn multi_line(&self) -> bool {
        self.multi_line
    }

    /// Where the answer within `generated` ends, if it is already known to be complete.
    /// With `finished`, generation has ended, so the last line counts as complete.
    /// [`finish`] cuts here too: whatever it would cut, generation need not produce.
    pub fn end_of_answer(&self, generated: &str, finished: bool) -> Option<usize> {
        if !self.smart {
            return if self.multi_line {
                finished.then_some(generated.len())
            } else {
                generated.find('\n').or(finished.then_some(generated.len()))
            };
        }
        // (One line is cut by `balance` in `finish`, after trimming what repeats the
        // text right of the cursor: only the whole line says where.)
        let scoped = if self.multi_line {
            self.within_scope(generated)
        } else {
            generated
        };
        if scoped.len() < generated.len() {
            return Some(self.end_of_answer(scoped, true).unwrap_or(scoped.len()));
        }
        // The lines so far, the first with the line prefix it continues, after the
        // line above the cursor (which the answer must not repeat either).
        let mut lines: Vec<String> = self.line_above.iter().cloned().collect();
        let above = lines.len();
        let mut starts: Vec<usize> = Vec::new();
        let mut strings = self.strings;
        let mut start = 0usize;
        for (number, line) in generated.split_inclusive('\n').enumerate() {
            let complete = line.ends_with('\n') || finished;
            let text = line.trim_end_matches(['\n', '\r']);
            // Before this line and the line break that precedes it.
            let before_line = start.saturating_sub(1);
            if number > 0 && !self.multi_line {
                return Some(before_line);
            }
            let (whole, typed) = if number == 0 {
                (
                    format!("{}{text}", self.line_prefix),
                    self.line_prefix.len(),
                )
            } else {
                (text.to_owned(), 0)
            };
            if degenerate::runaway_repetition(&whole, typed) {
                return Some(before_line);
            }
            if !complete {
                break;
            }
            if number > 0 && self.ends_answer(text, number) {
                return Some(before_line);
            }
            if strings
                .as_mut()
                .is_some_and(|strings| !strings.line(&whole))
            {
                return Some(before_line);
            }
            lines.push(whole);
            starts.push(start);
            let numbered_run = usize::from(degenerate::numbered_run_too_long(&lines));
            let drop = degenerate::repeated_lines(&lines)
                .max(numbered_run)
                .min(lines.len() - above);
            if drop > 0 {
                return Some(starts[starts.len() - drop].saturating_sub(1));
            }
            start += line.len();
        }
        finished.then_some(generated.len())
    }

    /// Whether `text`, the answer's line `number` (after the first), is past its end:
    /// a blank line, a line past the most lines, one left of the block or the scope,
    /// or one like the line below the cursor.
    fn ends_answer(&self, text: &str, number: usize) -> bool {
        let trimmed = text.trim();
        trimmed.is_empty()
            || number >= self.max_lines
            || indent_of(text) < self.block_indent.max(self.scope_indent)
            || self
                .next_line
                .as_deref()
                .is_some_and(|next| similar(trimmed, next))
    }

    /// The longest prefix of `text` that does not close a bracket the code after the
    /// cursor already closes, nor one that was never opened.
    fn within_scope<'t>(&self, text: &'t str) -> &'t str {
        let mut open: Vec<char> = Vec::new();
        let mut needed = self.closers_needed.iter();
        for (at, c) in code_chars(text) {
            match c {
                '(' | '[' | '{' => open.push(closer_of(c)),
                ')' | ']' | '}' => {
                    if open.last() == Some(&c) {
                        open.pop();
                    } else if needed.next() != Some(&c) {
                        return &text[..at];
                    }
                }
                _ => {}
            }
        }
        text
    }
}

fn closer_of(opener: char) -> char {
    match opener {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// The chars of `text` outside string literals, with their byte offsets. A light lexer:
/// quotes open and close on the same line; a backslash escapes the next char.
fn code_chars(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    text.char_indices().filter(move |&(_, c)| {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q || c == '\n' {
                quote = None;
            }
            return false;
        }
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
            return false;
        }
        true
    })
}

/// Brackets opened in `text` and not closed there, as the closers they expect
/// (innermost last).
fn open_brackets(text: &str) -> Vec<char> {
    let mut open = Vec::new();
    for (_, c) in code_chars(text) {
        match c {
            '(' | '[' | '{' => open.push(closer_of(c)),
            ')' | ']' | '}' if open.last() == Some(&c) => {
                open.pop();
            }
            _ => {}
        }
    }
    open
}

/// The longest prefix of a one-line `text` that leaves the line's brackets no worse:
/// it closes nothing that was never opened, and nothing that `line_suffix` closes.
fn balance<'t>(mut text: &'t str, prefix: &str, line_suffix: &str) -> &'t str {
    let opened_before = open_brackets(prefix);
    loop {
        let mut open = opened_before.clone();
        let mut own = 0; // Brackets on `open` that `text` opened.
        let mut last_outer_close = None;
        let mut stray = None;
        for (at, c) in code_chars(text) {
            match c {
                '(' | '[' | '{' => {
                    open.push(closer_of(c));
                    own += 1;
                }
                ')' | ']' | '}' if open.last() == Some(&c) => {
                    open.pop();
                    if own == 0 {
                        last_outer_close = Some(at);
                    } else {
                        own -= 1;
                    }
                }
                ')' | ']' | '}' => {
                    stray = Some(at);
                    break;
                }
                _ => {}
            }
        }
        if let Some(at) = stray {
            text = &text[..at];
            continue;
        }
        let suffix_fits = code_chars(line_suffix).all(|(_, c)| match c {
            '(' | '[' | '{' => {
                open.push(closer_of(c));
                true
            }
            ')' | ']' | '}' => open.pop() == Some(c),
            _ => true,
        });
        match last_outer_close {
            Some(at) if !suffix_fits => text = &text[..at],
            _ => return text,
        }
    }
}

/// Brackets opened in `prefix` and not closed there nor in `suffix`, innermost first.
fn closers_needed(prefix: &str, suffix: &str) -> Vec<char> {
    let mut open = open_brackets(prefix);
    let mut inner: Vec<char> = Vec::new();
    for (_, c) in code_chars(suffix) {
        match c {
            '(' | '[' | '{' => inner.push(closer_of(c)),
            ')' | ']' | '}' => {
                if inner.last() == Some(&c) {
                    inner.pop();
                } else if open.last() == Some(&c) {
                    open.pop();
                }
            }
            _ => {}
        }
    }
    open.reverse();
    open
}

/// Whether two trimmed lines are equal or nearly so (edit distance at most a fifth).
fn similar(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let longest = a.len().max(b.len());
    if !(8..=400).contains(&longest) {
        return false; // Short lines ("}", "else:") legitimately repeat; long ones are costly.
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()] * 5 <= longest
}

/// The document's indentation: a tab, or a number of spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndentStyle {
    Tabs,
    Spaces(usize),
}

/// Infers the indentation style from the lines of `text`, if it has indented lines.
fn indent_style(text: &str) -> Option<IndentStyle> {
    let (mut tabs, mut spaces) = (0, 0);
    let mut widths = [0usize; 9];
    let mut previous = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let indent = &line[..indent_of(line)];
        if indent.starts_with('\t') {
            tabs += 1;
        } else if !indent.is_empty() {
            spaces += 1;
        }
        let width = indent.len();
        if width > previous && width - previous <= 8 && !indent.contains('\t') {
            widths[width - previous] += 1;
        }
        previous = width;
    }
    if tabs > spaces {
        return Some(IndentStyle::Tabs);
    }
    let (width, _) = widths
        .iter()
        .enumerate()
        .skip(1)
        .max_by_key(|&(w, n)| (*n, w))?;
    (spaces > 0).then_some(IndentStyle::Spaces(width))
}

/// Rewrites the leading white space of lines after the first to `style`, converting
/// tabs to spaces (or spaces to tabs) at the suggestion's own width.
fn normalize_indentation(text: &str, style: IndentStyle) -> String {
    // The suggestion's own step: the gcd of its space indents, 4 when that says little.
    let step = text
        .lines()
        .skip(1)
        .map(indent_of)
        .filter(|&w| w > 0)
        .fold(0, gcd);
    let own = Some(IndentStyle::Spaces(if step == 0 || step % 4 == 0 {
        4
    } else {
        step
    }));
    let mut out = String::with_capacity(text.len());
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let width = indent_of(line);
        let (indent, rest) = line.split_at(width);
        if number == 0 || indent.is_empty() {
            out.push_str(line);
            continue;
        }
        let levels_and_extra = match (style, own) {
            (IndentStyle::Tabs, Some(IndentStyle::Spaces(w))) if !indent.contains('\t') => {
                Some(("\t".repeat(width / w), " ".repeat(width % w)))
            }
            (IndentStyle::Spaces(w), _) if indent.contains('\t') => {
                let tabs = indent.chars().filter(|&c| c == '\t').count();
                Some((" ".repeat(tabs * w), " ".repeat(width - tabs)))
            }
            _ => None,
        };
        match levels_and_extra {
            Some((levels, extra)) => {
                out.push_str(&levels);
                out.push_str(&extra);
            }
            None => out.push_str(indent),
        }
        out.push_str(rest);
    }
    out
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Length of the longest end of `text` that is a start of `suffix`, when trimming it is
/// safe: two chars or more, or one that is neither a word char nor white space.
fn suffix_overlap(text: &str, suffix: &str) -> usize {
    let suffix = suffix.trim_start();
    (1..=text.len().min(suffix.len()))
        .rev()
        .filter(|&n| text.is_char_boundary(text.len() - n) && suffix.is_char_boundary(n))
        .find(|&n| {
            text.ends_with(&suffix[..n])
                && (n >= 2
                    || !suffix[..n]
                        .chars()
                        .all(|c| is_word_char(c) || c.is_whitespace()))
        })
        .unwrap_or(0)
}

/// The start of `generated` the suggestion is made of (before its indentation is
/// adjusted), or `None` when nothing useful is left.
/// `text` up to its first control character other than tab and line breaks (`\n`,
/// `\r\n`): NUL, escape, a lone `\r` and the like are no code, whatever backend
/// sent them.
pub fn before_control(text: &str) -> &str {
    let end = text
        .char_indices()
        .find(|&(at, c)| {
            c.is_control()
                && !(matches!(c, '\t' | '\n') || (c == '\r' && text[at + 1..].starts_with('\n')))
        })
        .map_or(text.len(), |(at, _)| at);
    &text[..end]
}

fn kept<'g>(generated: &'g str, context: &CompletionContext, rules: &StopRules) -> Option<&'g str> {
    let generated = before_control(generated);
    let end = rules
        .end_of_answer(generated, true)
        .unwrap_or(generated.len());
    let mut text = generated[..end].trim_end();
    if !rules.smart {
        return (!text.trim().is_empty()).then_some(text);
    }
    if rules.multi_line {
        text = without_dangling_openers(text, context);
    } else {
        text = &text[..text.len() - suffix_overlap(text, &context.line_suffix)];
        text = balance(text, &context.prefix, &context.line_suffix).trim_end();
    }
    let already_there = context.line_suffix.trim_start().starts_with(text.trim());
    if text.trim().chars().count() < 2 || already_there {
        return None;
    }
    Some(text)
}

/// `text` (several lines) without the lines at its end that open a block with no body:
/// a limit ended the answer before the body, and the document's next code line is not
/// one either (see [`opens_block_without_body`]). The first line stays: it continues
/// what is typed.
fn without_dangling_openers<'t>(mut text: &'t str, context: &CompletionContext) -> &'t str {
    while let Some((head, last)) = text.rsplit_once('\n') {
        if !opens_block_without_body(last, context) {
            break;
        }
        text = head.trim_end();
    }
    text
}

/// Whether `line` (indented as in the file), put in at `context`, opens a block whose
/// body is not there: the document's next code line is not indented deeper. Measured
/// in columns: the model may indent with spaces a file indented with tabs.
pub fn opens_block_without_body(line: &str, context: &CompletionContext) -> bool {
    opens_block(line)
        && next_code_line(context).is_none_or(|next| indent_columns(next) <= indent_columns(line))
}

/// The width of `line`'s indentation, a tab reaching the next multiple of 4 columns.
fn indent_columns(line: &str) -> usize {
    line[..indent_of(line)].chars().fold(0, |width, c| {
        if c == '\t' {
            width / 4 * 4 + 4
        } else {
            width + 1
        }
    })
}

/// `generated` without its last line when it has several: for a generation a limit
/// (tokens or time) cut, whose last line stopped where the limit fell, not where
/// the code does.
pub fn whole_lines(generated: &str) -> &str {
    generated
        .rfind('\n')
        .map_or(generated, |end| &generated[..end])
}

/// Turns generated text into the suggestion to show, or `None` when nothing useful is left.
pub fn finish(generated: &str, context: &CompletionContext, rules: &StopRules) -> Option<String> {
    let text = kept(generated, context, rules)?;
    Some(match indent_style(&context.prefix) {
        Some(style) if text.contains('\n') => normalize_indentation(text, style),
        _ => text.to_owned(),
    })
}

/// How many bytes at the start of `generated` the suggestion [`finish`] makes of it
/// comes from (0 when there is none): the rest was generated for nothing.
pub fn shown_len(generated: &str, context: &CompletionContext, rules: &StopRules) -> usize {
    kept(generated, context, rules).map_or(0, str::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_line_keeps_opens_or_ends_the_block() {
        let python = "def f(x):\n    y = x\n    return y";
        assert_eq!(next_line_indent(python, "python"), "");
        assert_eq!(next_line_indent("def f(x):\n    y = x", "python"), "    ");
        assert_eq!(next_line_indent("def f(x):", "python"), "    ");
        assert_eq!(next_line_indent("if x:\n  if y:", "python"), "    ");
        let rust = "fn main() {\n\tlet x = 1;";
        assert_eq!(next_line_indent(rust, "rust"), "\t");
        assert_eq!(next_line_indent("fn main() {\n\tif x {", "rust"), "\t\t");
        // `return` ends a block in Python only.
        assert_eq!(next_line_indent("fn f() {\n    return 1;", "rust"), "    ");
    }
    use crate::syntax::SyntaxFacts;

    /// A context with the cursor between `before` and `after` (whole document).
    fn context(before: &str, after: &str) -> CompletionContext {
        let line_prefix = before.rsplit('\n').next().unwrap_or_default().to_owned();
        let line_suffix = after.split('\n').next().unwrap_or_default().to_owned();
        CompletionContext {
            prefix: before.to_owned(),
            suffix: after.to_owned(),
            line_prefix,
            line_suffix,
            language_id: "python".into(),
            syntax: SyntaxFacts::default(),
            ..CompletionContext::default()
        }
    }

    fn suggest(before: &str, after: &str, generated: &str) -> Option<String> {
        let ctx = context(before, after);
        let plan = plan(&ctx, Trigger::Automatic, Options::default()).expect("a plan");
        let rules = StopRules::new(&ctx, &plan, Options::default());
        finish(generated, &ctx, &rules)
    }

    #[test]
    fn no_suggestion_mid_word_or_in_comments() {
        let mid = context("x = pri", "nt(y)\n");
        assert_eq!(
            plan(&mid, Trigger::Automatic, Options::default()),
            Err(Skip::MidWord)
        );
        let mut comment = context("# explain ", "\n");
        comment.syntax.in_comment = true;
        assert!(plan(&comment, Trigger::Automatic, Options::default()).is_ok());
        let no_comments = Options {
            in_comments: false,
            ..Options::default()
        };
        assert_eq!(
            plan(&comment, Trigger::Automatic, no_comments),
            Err(Skip::InComment)
        );
        // Asked for, a suggestion is made anyway.
        assert!(plan(&comment, Trigger::Invoked, no_comments).is_ok());
        assert!(
            plan(
                &context("x = pri", "\n"),
                Trigger::Automatic,
                Options::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn one_line_or_several() {
        let multi = |before: &str, after: &str| {
            plan(
                &context(before, after),
                Trigger::Automatic,
                Options::default(),
            )
            .unwrap()
            .multi_line
        };
        // Code right of the cursor, or completing a statement: one line.
        assert!(!multi("print(s.", ")\n"));
        assert!(!multi("def f(x):\n    y = ", "\n    return y\n"));
        // An empty block body, a line that opens a block, the end of a block: several.
        assert!(multi("def f(x):\n    ", "\n"));
        assert!(multi("fn main() {", "\n}\n"));
        assert!(multi(
            "def f(x):\n    y = 1\n    ",
            "\ndef g():\n    pass\n"
        ));
        // A new statement in the middle of a block: one.
        assert!(!multi("def f(x):\n    y = 1\n    ", "\n    return y\n"));
    }

    #[test]
    fn invoked_requests_get_more_lines_and_alternatives() {
        let ctx = context("def f(x):\n    ", "\n");
        let invoked = plan(&ctx, Trigger::Invoked, Options::default()).unwrap();
        let automatic = plan(&ctx, Trigger::Automatic, Options::default()).unwrap();
        assert!(invoked.max_lines > automatic.max_lines);
        assert!(invoked.alternatives && !automatic.alternatives);
    }

    #[test]
    fn single_line_stops_at_the_line_end() {
        let ctx = context("x = foo(", ")\n");
        let plan = plan(&ctx, Trigger::Automatic, Options::default()).unwrap();
        let rules = StopRules::new(&ctx, &plan, Options::default());
        assert_eq!(rules.end_of_answer("a, b", false), None);
        assert_eq!(rules.end_of_answer("a, b)\nmore", false), Some(5));
    }

    #[test]
    fn indentation_dropping_below_the_block_ends_it() {
        let generated = "return x + 1\n\ndef other():\n";
        let got = suggest("def f(x):\n    ", "\n", generated);
        assert_eq!(got.as_deref(), Some("return x + 1"));
        let generated = "if x:\n        return 1\n    return 2\nprint(f(3))\n";
        let got = suggest("def f(x):\n    ", "\n", generated);
        assert_eq!(
            got.as_deref(),
            Some("if x:\n        return 1\n    return 2")
        );
    }

    #[test]
    fn leaving_the_enclosing_scope_ends_the_answer() {
        // A blank, not yet indented line inside a body tree-sitter puts at column 4.
        let mut ctx = context("def f(x):\n    y = 1\n", "\n    return y\n");
        ctx.syntax.scope_indent = Some(4);
        let plan = Plan {
            multi_line: true,
            max_lines: 8,
            alternatives: false,
            stop_when_unsure: false,
        };
        let rules = StopRules::new(&ctx, &plan, Options::default());
        let generated = "    z = y * 2\n    print(z)\ndef g():\n";
        assert_eq!(rules.end_of_answer(generated, false), Some(26));
        ctx.syntax.scope_indent = None;
        let rules = StopRules::new(&ctx, &plan, Options::default());
        assert_eq!(rules.end_of_answer(generated, false), None);
    }

    #[test]
    fn a_blank_line_ends_the_answer() {
        let got = suggest(
            "def f(x):\n    ",
            "\n",
            "y = x * 2\n    return y\n\n    z = 3\n",
        );
        assert_eq!(got.as_deref(), Some("y = x * 2\n    return y"));
    }

    #[test]
    fn a_line_like_the_one_below_the_cursor_ends_the_answer() {
        let after = "\n    return total / len(values)\n";
        let generated = "total = sum(values)\n    return total / len(values)\n";
        let got = suggest("def mean(values):\n    ", after, generated);
        assert_eq!(got.as_deref(), Some("total = sum(values)"));
        // Nearly the same line counts too.
        let generated = "total = sum(values)\n    return total / len(values )\n";
        let got = suggest("def mean(values):\n    ", after, generated);
        assert_eq!(got.as_deref(), Some("total = sum(values)"));
    }

    #[test]
    fn repeated_lines_and_blocks_are_removed() {
        let got = suggest(
            "def f():\n    ",
            "\n",
            "print(1)\n    print(1)\n    print(1)\n",
        );
        assert_eq!(got.as_deref(), Some("print(1)"));
        let generated = "a = 1\n    b = 2\n    a = 1\n    b = 2\n";
        let got = suggest("def f():\n    ", "\n", generated);
        assert_eq!(got.as_deref(), Some("a = 1\n    b = 2"));
        // A run of lines differing only in their numbers is continued three lines.
        let generated = "):\n    s = Stock()\n    s.add(10)\n    s.add(11)\n    s.add(12)\n    s.add(13)\n    s.add(14)";
        let got = suggest("def main(", "\n", generated);
        assert_eq!(
            got.as_deref(),
            Some("):\n    s = Stock()\n    s.add(10)\n    s.add(11)\n    s.add(12)")
        );
    }

    #[test]
    fn closing_brackets_already_after_the_cursor_are_dropped() {
        assert_eq!(
            suggest("print(s.", ")\n", "upper())").as_deref(),
            Some("upper()")
        );
        assert_eq!(
            suggest("x = [f(a", ")]\n", "), g(b)]").as_deref(),
            Some("), g(b")
        );
        // The closer the suffix lacks is kept.
        assert_eq!(
            suggest("print(s.", "\n", "upper())").as_deref(),
            Some("upper())")
        );
        // One that was never opened is not emitted.
        assert_eq!(suggest("x = ", "\n", "1 + 2)").as_deref(), Some("1 + 2"));
        // Brackets inside strings do not count.
        assert_eq!(
            suggest("s = f(", ")\n", "\"(\"))").as_deref(),
            Some("\"(\"")
        );
    }

    #[test]
    fn the_end_of_the_enclosing_scope_ends_the_answer() {
        let generated = "    return a + b;\n}\n\nfn other() {}\n";
        let mut ctx = context("fn add(a: i32, b: i32) -> i32 {\n", "\n}\n");
        ctx.language_id = "rust".into();
        let plan = plan(&ctx, Trigger::Automatic, Options::default()).unwrap();
        assert!(plan.multi_line);
        let rules = StopRules::new(&ctx, &plan, Options::default());
        assert_eq!(
            finish(generated, &ctx, &rules).as_deref(),
            Some("    return a + b;")
        );
    }

    #[test]
    fn text_that_duplicates_the_suffix_is_trimmed() {
        assert_eq!(
            suggest("for i in range(", "):\n", "10):").as_deref(),
            Some("10")
        );
        assert_eq!(
            suggest("d = {\"a\": ", ", \"b\": 2}\n", "10, \"b\": 2}").as_deref(),
            Some("10")
        );
    }

    #[test]
    fn blank_short_and_already_present_answers_are_dropped() {
        assert_eq!(suggest("def f():\n    ", "\n", "  \n\n"), None);
        assert_eq!(suggest("x = ", "\n", "1"), None);
        assert_eq!(suggest("x = foo(", "a, b)\n", "a, b)"), None);
    }

    #[test]
    fn a_block_opened_on_the_last_line_without_its_body_is_dropped() {
        let before = "def f(x):\n    ";
        let generated = "y = x\n    if y:\n        y += 1\n    elif y < 0:\n";
        assert_eq!(
            suggest(before, "\n", generated).as_deref(),
            Some("y = x\n    if y:\n        y += 1")
        );
        // Its body is in the document already: the line below the cursor.
        let generated = "y = x\n    for z in y:\n";
        assert_eq!(
            suggest(before, "\n        print(z)\n", generated).as_deref(),
            Some("y = x\n    for z in y:")
        );
        // A first line that opens a block is what the user is typing.
        assert_eq!(suggest(before, "\n", "if x:\n").as_deref(), Some("if x:"));
        // A file indented with tabs, the answer with spaces: the body is still there.
        let (before, after) = ("def f(x):\n\tw = x\n\tif w:\n\t\t", "\n\t\t\tprint(z)\n");
        let generated = "y = x\n        for z in y:\n";
        assert_eq!(
            suggest(before, after, generated).as_deref(),
            Some("y = x\n\t\tfor z in y:")
        );
    }

    #[test]
    fn text_ends_before_a_control_character() {
        assert_eq!(
            suggest("x = ", "\n", "print(1)\u{0}x").as_deref(),
            Some("print(1)")
        );
        assert_eq!(suggest("x = ", "\n", "\u{1b}[31mred"), None);
        assert_eq!(before_control("a\r\nb\rc"), "a\r\nb");
    }

    #[test]
    fn indentation_follows_the_document() {
        let before = "def f(x):\n\tif x:\n\t\treturn 1\n\t";
        let got = suggest(before, "\n", "if not x:\n        return 2\n");
        assert_eq!(got.as_deref(), Some("if not x:\n\t\treturn 2"));
        let before = "def f(x):\n  if x:\n    return 1\n  ";
        let got = suggest(before, "\n", "if not x:\n\t\treturn 2\n");
        assert_eq!(got.as_deref(), Some("if not x:\n    return 2"));
    }

    #[test]
    fn disabled_post_processing_keeps_the_basic_rules_only() {
        let ctx = context("def f(x):\n    ", "\n");
        let off = Options {
            enabled: false,
            ..Options::default()
        };
        let plan = plan(&ctx, Trigger::Automatic, off).unwrap();
        let rules = StopRules::new(&ctx, &plan, off);
        let generated = "return x\n\nprint(1)\n";
        assert_eq!(rules.end_of_answer(generated, false), None);
        assert_eq!(
            finish(generated, &ctx, &rules).as_deref(),
            Some("return x\n\nprint(1)")
        );
        let single = context("print(s.", ")\n");
        let plan = super::plan(&single, Trigger::Automatic, off).unwrap();
        let rules = StopRules::new(&single, &plan, off);
        assert_eq!(
            finish("upper())\nx", &single, &rules).as_deref(),
            Some("upper())")
        );
    }

    #[test]
    fn a_runaway_run_ends_the_answer_while_it_streams() {
        let ctx = context("    inventory.add(Item(\"", "\n");
        let plan = plan(&ctx, Trigger::Invoked, Options::default()).unwrap();
        let rules = StopRules::new(&ctx, &plan, Options::default());
        let zeros = format!("1{}", "0".repeat(12));
        assert_eq!(rules.end_of_answer(&zeros, false), None);
        let zeros = format!("1{}", "0".repeat(21));
        assert_eq!(rules.end_of_answer(&zeros, false), Some(0));
        assert_eq!(finish(&zeros, &ctx, &rules), None);
        // In a later line, the lines before it stay.
        let generated = format!("x = 1\n    y = \"{}\"\n", "ab".repeat(30));
        assert_eq!(
            suggest("def f():\n    ", "\n", &generated).as_deref(),
            Some("x = 1")
        );
    }

    #[test]
    fn repeating_the_line_above_the_cursor_is_no_answer() {
        let before = "def f():\n    total = compute(1)\n    ";
        assert_eq!(suggest(before, "\n", "total = compute(1)\n"), None);
        let before = "def f():\n    total = compute(1)\n    total = ";
        assert_eq!(suggest(before, "\n", "compute(1)\n"), None);
        assert_eq!(
            suggest(before, "\n", "compute(2)\n").as_deref(),
            Some("compute(2)")
        );
    }

    #[test]
    fn a_string_left_open_at_the_line_end_ends_the_answer() {
        // The first line, once finished, and a later line.
        assert_eq!(suggest("    x = f(\"", "\n", "1"), None);
        assert_eq!(
            suggest("    x = f(\"", "\n", "a.txt\")").as_deref(),
            Some("a.txt\")")
        );
        let generated = "a = 1\n    b = \"oops\n    c = 2\n";
        assert_eq!(
            suggest("def f():\n    ", "\n", generated).as_deref(),
            Some("a = 1")
        );
        // Inside a docstring opened lines above, the lexer cannot tell: no rule.
        let mut ctx = context("def f():\n    \"\"\"Explain\n    it", "\n");
        ctx.syntax.in_string = true;
        let plan = plan(&ctx, Trigger::Invoked, Options::default()).unwrap();
        let rules = StopRules::new(&ctx, &plan, Options::default());
        assert_eq!(finish("'s use\n", &ctx, &rules).as_deref(), Some("'s use"));
    }

    #[test]
    fn streaming_stops_only_where_finish_cuts() {
        // Wherever generation stops, the suggestion is the one the whole text gives.
        let cases = [
            (
                "def f(x):\n    ",
                "\n",
                "y = x * 2\n    return y\n\ndef g():\n    pass\n",
            ),
            ("def main(", "\n", "):\n    run()\n    run()\n    stop()\n"),
            ("x = foo(", ")\n", "a, b)\nmore()\n"),
            ("    x = f(\"", "\n", "1000000000000000000000000000\n"),
            (
                "fn main() {",
                "\n}\n",
                "\n    let s = \"abc\";\n}\nfn other() {}\n",
            ),
        ];
        for (before, after, generated) in cases {
            let ctx = context(before, after);
            let plan = plan(&ctx, Trigger::Invoked, Options::default()).unwrap();
            let rules = StopRules::new(&ctx, &plan, Options::default());
            let whole = finish(generated, &ctx, &rules);
            let stop = (1..=generated.len())
                .filter(|&n| generated.is_char_boundary(n))
                .find(|&n| rules.end_of_answer(&generated[..n], false).is_some());
            let n = stop.unwrap_or_else(|| panic!("never stopped: {generated:?}"));
            assert!(
                n < generated.len(),
                "stopped at the very end: {generated:?}"
            );
            assert_eq!(
                finish(&generated[..n], &ctx, &rules),
                whole,
                "{generated:?}"
            );
        }
    }

    #[test]
    fn similarity_is_an_edit_distance() {
        assert!(similar("return total / n", "return total / n"));
        assert!(similar("return total / len(x)", "return total/len(x)"));
        assert!(!similar("return total / len(x)", "print(values, sep=', ')"));
        assert!(!similar("}", ")"));
    }

    #[test]
    fn needed_closers_are_the_unclosed_ones() {
        assert_eq!(closers_needed("f(a, [b", "]\n"), vec![')']);
        assert_eq!(closers_needed("f(a, [b", "])\n"), Vec::<char>::new());
        assert_eq!(closers_needed("x = \"(\" + g(", "\n"), vec![')']);
    }
}
