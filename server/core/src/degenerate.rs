//! Text no real code has, or one suggestion should not hold: the rules that stop a
//! degenerate generation while it streams ([`crate::postprocess::StopRules::end_of_answer`] calls them on every
//! token, and `finish` cuts where they say). Plain functions of text:
//!
//! - [`runaway_repetition`]: a run of one character, or of a short group of
//!   characters, longer than real code has (`"1000000000000…`, `abababab…`);
//! - [`repeated_lines`]: lines that only repeat the lines just before them (the
//!   caller counts the line above the cursor among them);
//! - [`numbered_run_too_long`]: more lines in a row that differ only in their
//!   numbers than a suggestion continues (`add(10)`, `add(11)`, … to the token limit);
//! - [`Strings`]: a string literal left open at the end of a line in a language where
//!   strings end on their line.
//!
//! The limits were measured on real code: every line of at most 200 chars (longer
//! ones are data) of the Python 3.11 standard library (3.1 M lines with code), the
//! Rust crates in the cargo registry (3.4 M), the C/C++ sources there (llama.cpp,
//! 2.4 M) and the JavaScript/TypeScript under /usr/lib/node_modules (165 k), with a
//! script that took per line the longest run of one character (letters and digits
//! apart from punctuation), the longest stretch covered by a repeated group of 2 to
//! 6 characters, and whether the line repeats the line before it or an earlier
//! one. Each limit is one about 1 line in 10 000 of that code exceeds or fewer —
//! except [`NUMBERED_RUN`], which real code's tables exceed far more often: it bounds
//! what one suggestion continues (see there).

/// Longest run of one letter or digit kept: 475 of the 9.1 M lines have a longer one
/// (test data such as `b'zzzz…'`, `"1000…000"`); the 99.99th percentile is 8 to 20
/// by language.
const LETTER_RUN: usize = 20;

/// Longest run of one punctuation character kept (`-`, `=`, `*`, `#`, `/`): rulers in
/// comments are as long as a line, the 99.99th percentile 77 to 78, the 99.999th
/// 80 (Python) to 158 (C).
const PUNCTUATION_RUN: usize = 80;

/// Longest stretch of a line covered by one group of 2 to [`LONGEST_GROUP`]
/// characters repeated (`0x70, 0x70, …`, `, 0, 0, …`, `abab…`, `"apple", "apple", …`)
/// kept: for groups of 2 to 6, 3 189 of the 9.1 M lines have a longer one, nearly all
/// data tables in Rust and C (0.035%; at 32 chars it would be 0.06%); for groups of 7
/// to 12 (measured on the Python standard library, one character and blank groups
/// left out), 69 of its 3.1 M lines (0.002%: `NPY_DOUBLE, ` six times, tables of
/// padded numbers).
const GROUP_SPAN: usize = 48;

/// Longest group [`GROUP_SPAN`] looks for: a list of one repeated string or call
/// (`"apple", ` is 9) is the longest degenerate group the default model was seen to
/// produce.
const LONGEST_GROUP: usize = 12;

/// Whether `line` has a run of one character, or of a group of 2 to [`LONGEST_GROUP`]
/// characters, longer than real code has, reaching past byte `from` (the generated part of the
/// line: a run typed by the user is theirs). White space never counts.
pub fn runaway_repetition(line: &str, from: usize) -> bool {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    // Whether the char at index `i`, which ends a run, was generated.
    let reaches = |i: usize| chars[i].0 >= from;
    // Runs of one character.
    let mut run = 0;
    for i in 0..chars.len() {
        let c = chars[i].1;
        run = if i > 0 && chars[i - 1].1 == c {
            run + 1
        } else {
            1
        };
        let limit = if c.is_alphanumeric() {
            LETTER_RUN
        } else if c.is_whitespace() {
            continue;
        } else {
            PUNCTUATION_RUN
        };
        if run > limit && reaches(i) {
            return true;
        }
    }
    // Runs of a group: chars[i] == chars[i - period] over a stretch.
    for period in 2..=LONGEST_GROUP {
        let mut matching = 0;
        for i in period..chars.len() {
            matching = if chars[i].1 == chars[i - period].1 {
                matching + 1
            } else {
                0
            };
            if matching + period > GROUP_SPAN && reaches(i) {
                let group = &chars[i + 1 - period..=i];
                let one_char = group.iter().all(|&(_, c)| c == group[0].1);
                let blank = group.iter().all(|&(_, c)| c.is_whitespace());
                if !one_char && !blank {
                    return true;
                }
            }
        }
    }
    false
}

/// Shortest line (trimmed, in chars) whose repetition counts: `}`, `end`, `});`
/// legitimately repeat. Of real lines of 10 chars or more, 0.01% to 0.4% equal the
/// line before them (the rate of all lines, short ones included, is 2% to 12%).
/// Repeating any earlier line, or an earlier pair of lines, is common in real code
/// (in 24-line windows 1% to 7% of lines repeat an earlier pair): neither counts.
const REPEATED_LINE_MIN: usize = 4;

/// How many lines at the end of `lines` only repeat the lines just before them, 0
/// when the last line may stay: 1 when it equals the line before it (trimmed), `size`
/// when the last `size` lines (2 to 4) equal the `size` lines before them.
pub fn repeated_lines<S: AsRef<str>>(lines: &[S]) -> usize {
    let trimmed: Vec<&str> = lines.iter().map(|l| l.as_ref().trim()).collect();
    let n = trimmed.len();
    if n < 2 || trimmed[n - 1].chars().count() < REPEATED_LINE_MIN {
        return 0;
    }
    (1..=4)
        .find(|&size| n >= 2 * size && trimmed[n - size..] == trimmed[n - 2 * size..n - size])
        .unwrap_or(0)
}

/// Most lines in a row that differ only in their numbers an answer keeps, the line
/// above the cursor counted. Such runs are real code's tables: 0.76 % of the Python
/// 3.11 standard library's lines with code are in runs longer than 2, 0.45 % in runs
/// longer than 10 (same script as above). So this is no limit of what code has, but
/// of what one suggestion continues: such a run is also the default model's commonest
/// loop (`def main(` in the demo file: `inventory.add(10)`, `inventory.add(11)`, … for
/// 128 tokens and 3 s), and a user who wants the table asks again after accepting.
const NUMBERED_RUN: usize = 3;

/// Whether the last of `lines` makes a run of more than [`NUMBERED_RUN`] lines that
/// differ only in their numbers (each with one, not all the same). Digits in a name
/// (`conv1`, `u8`) are the name's, not a number.
pub fn numbered_run_too_long<S: AsRef<str>>(lines: &[S]) -> bool {
    let Some(run) = lines.len().checked_sub(NUMBERED_RUN + 1) else {
        return false;
    };
    let run: Vec<&str> = lines[run..].iter().map(|l| l.as_ref().trim()).collect();
    // Called on every token: most last lines fail the cheap checks.
    let last = run[NUMBERED_RUN];
    if last.chars().count() < REPEATED_LINE_MIN || !last.contains(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let shape = numbers_as_one_mark(last);
    shape.contains(NUMBER)
        && run[..NUMBERED_RUN].iter().all(|line| {
            line.chars().count() >= REPEATED_LINE_MIN && numbers_as_one_mark(line) == shape
        })
        && run.iter().any(|line| *line != last)
}

/// What stands for a number in [`numbers_as_one_mark`]: no code has it.
const NUMBER: char = '\0';

/// `line` with each number (a run of digits not in a name, with what follows it: `1.5`
/// is two) as one [`NUMBER`].
fn numbers_as_one_mark(line: &str) -> String {
    let mut shape = String::with_capacity(line.len());
    let (mut in_name, mut in_number) = (false, false);
    for c in line.chars() {
        if c.is_ascii_digit() && !in_name {
            if !in_number {
                shape.push(NUMBER);
                in_number = true;
            }
            continue;
        }
        in_number = false;
        in_name = c.is_alphanumeric() || c == '_';
        shape.push(c);
    }
    shape
}

/// Where a lexer is at the end of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Code,
    /// In a string opened by `quote` (tripled in Python); `spans_lines` when such a
    /// string may go on past the line end.
    String {
        quote: char,
        triple: bool,
        spans_lines: bool,
    },
    /// In a `/* … */` comment.
    BlockComment,
}

/// The string literals of a language whose strings (some of them) must end on
/// their line — Python, C, C++, Go, JavaScript, TypeScript — read line after line:
/// a line that ends inside such a string cannot be code. A light lexer: comments,
/// escapes, Python's triple quotes, multi-line raw strings (Go's and JavaScript's
/// backquotes), C++ digit separators (`1'000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strings {
    python: bool,
    state: State,
}

impl Strings {
    /// A lexer for `language_id` at the start of a line of code, or `None` for a
    /// language without single-line strings (Rust's strings span lines, and its `'`
    /// starts lifetimes) or one this does not know.
    pub fn new(language_id: &str) -> Option<Strings> {
        let python = match language_id {
            "python" => true,
            "c" | "cpp" | "go" | "javascript" | "javascriptreact" | "typescript"
            | "typescriptreact" => false,
            _ => return None,
        };
        Some(Strings {
            python,
            state: State::Code,
        })
    }

    /// Whether the lexer is inside a string or a comment (a line comment counts
    /// until the line ends).
    pub fn in_string_or_comment(&self, line: &str) -> (bool, bool) {
        let (state, in_line_comment) = self.scan(line);
        (
            matches!(state, State::String { .. }),
            in_line_comment || state == State::BlockComment,
        )
    }

    /// Reads one line (without its line break); `false` when the line ends inside a
    /// string that cannot go on to the next line.
    pub fn line(&mut self, line: &str) -> bool {
        let (state, _) = self.scan(line);
        let escaped_break = line.ends_with('\\');
        self.state = match state {
            State::String {
                spans_lines: false, ..
            } if !escaped_break => return false,
            other => other,
        };
        true
    }

    /// The state at the end of `line`, and whether a line comment runs to its end.
    fn scan(&self, line: &str) -> (State, bool) {
        let mut state = self.state;
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match state {
                State::Code => {
                    let line_comment = if self.python {
                        c == '#'
                    } else {
                        c == '/' && next == Some('/')
                    };
                    if line_comment {
                        return (State::Code, true);
                    }
                    if !self.python && c == '/' && next == Some('*') {
                        state = State::BlockComment;
                        i += 1;
                    } else if c == '"' || c == '\'' || c == '`' && !self.python {
                        let after_digit = i > 0 && chars[i - 1].is_ascii_alphanumeric();
                        if c == '\'' && !self.python && after_digit {
                            // A C++ digit separator, not a char literal.
                        } else {
                            let triple =
                                self.python && next == Some(c) && chars.get(i + 2) == Some(&c);
                            state = State::String {
                                quote: c,
                                triple,
                                spans_lines: triple || c == '`',
                            };
                            if triple {
                                i += 2;
                            }
                        }
                    }
                }
                State::String { quote, triple, .. } => {
                    if c == '\\' {
                        i += 1;
                    } else if c == quote
                        && (!triple || next == Some(c) && chars.get(i + 2) == Some(&c))
                    {
                        state = State::Code;
                        if triple {
                            i += 2;
                        }
                    }
                }
                State::BlockComment => {
                    if c == '*' && next == Some('/') {
                        state = State::Code;
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        (state, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_of_one_character_is_runaway() {
        let line = "    inventory.add(Item(\"1000000000000000000000";
        assert!(runaway_repetition(line, 23));
        assert!(!runaway_repetition("    x = 1000000", 8));
        assert!(!runaway_repetition("MASK = 0xFFFFFFFF", 7));
        assert!(runaway_repetition(
            "if poly(x) * poly(x) < 0.000000000000000000000001",
            10
        ));
        // A ruler in a comment is code; one longer than a line is not.
        assert!(!runaway_repetition(&format!("# {}", "-".repeat(77)), 0));
        assert!(runaway_repetition(&format!("# {}", "-".repeat(90)), 0));
        // Indentation never counts.
        assert!(!runaway_repetition(&format!("{}x = 1", " ".repeat(100)), 0));
    }

    #[test]
    fn a_run_the_user_typed_is_theirs() {
        let typed = format!("x = \"{}", "0".repeat(30));
        assert!(!runaway_repetition(&typed, typed.len()));
        assert!(runaway_repetition(&format!("{typed}0"), typed.len()));
    }

    #[test]
    fn a_long_run_of_a_short_group_is_runaway() {
        assert!(runaway_repetition(&format!("x = [{}", "1, ".repeat(20)), 4));
        assert!(runaway_repetition(&format!("s = \"{}", "ab".repeat(30)), 4));
        assert!(!runaway_repetition("table = [0, 0, 0, 0, 0, 0, 0, 0]", 0));
        assert!(!runaway_repetition("assert f(1, 1) == f(1, 1)", 0));
        // Groups of up to 12 characters: a list of one string (the default model's
        // answer in difflib's docstring), four of a 12-character group are code.
        let apples = format!("f(\"apple\", [{}", "\"apple\", ".repeat(20));
        assert!(runaway_repetition(&apples, 10));
        assert!(!runaway_repetition(
            &format!("types = {{{}}};", "NPY_DOUBLE, ".repeat(4)),
            0
        ));
        assert!(runaway_repetition(
            &format!("types = {{{}}};", "NPY_DOUBLE, ".repeat(6)),
            0
        ));
    }

    #[test]
    fn a_line_repeating_the_one_before_is_dropped() {
        assert_eq!(repeated_lines(&["print(1)", "    print(1)"]), 1);
        assert_eq!(repeated_lines(&["}", "}"]), 0);
        assert_eq!(repeated_lines(&["a = 1", "b = 2", "a = 1", "b = 2"]), 2);
        assert_eq!(
            repeated_lines(&["a = 1", "b = 2", "c = 3", "a = 1", "b = 2", "c = 3"]),
            3
        );
        assert_eq!(repeated_lines(&["a = 1", "b = 2", "a = 1"]), 0);
        assert_eq!(repeated_lines::<&str>(&[]), 0);
    }

    #[test]
    fn a_long_run_of_lines_differing_only_in_numbers_ends() {
        let counting = ["x.add(10)", "x.add(11)", "x.add(12)", "x.add(13)"];
        assert!(numbered_run_too_long(&counting));
        assert!(!numbered_run_too_long(&counting[..3]));
        // Digits of any length, anywhere; names that differ break the run.
        assert!(numbered_run_too_long(&[
            "t[8] = 1",
            "t[9] = 2",
            "t[10] = 30",
            "t[11] = 4"
        ]));
        assert!(!numbered_run_too_long(&[
            "a = f(1)", "b = f(2)", "c = f(3)", "d = f(4)"
        ]));
        // Digits in names are the names'.
        assert!(!numbered_run_too_long(&[
            "self.conv1 = conv",
            "self.conv2 = conv",
            "self.conv3 = conv",
            "self.conv4 = conv",
        ]));
        // Lines without a number, or all the same, are not a numbered run.
        assert!(!numbered_run_too_long(&[
            "x.pop()", "x.pop()", "x.pop()", "x.pop()"
        ]));
        assert!(!numbered_run_too_long(&["f(1)", "f(1)", "f(1)", "f(1)"]));
    }

    #[test]
    fn repeating_an_earlier_line_that_is_not_just_above_is_code() {
        let lines = [
            "total = total + x",
            "count = count + 1",
            "print(total)",
            "total = total + x",
            "count = count + 1",
        ];
        assert_eq!(repeated_lines(&lines), 0);
    }

    #[test]
    fn a_string_left_open_at_the_line_end_is_not_code() {
        let mut python = Strings::new("python").unwrap();
        assert!(python.line("x = \"abc\"  # it's fine"));
        assert!(!python.clone().line("    inventory.add(Item(\"1"));
        assert!(python.line("s = 'a' \\"));
        // Triple-quoted strings span lines.
        assert!(python.line("doc = \"\"\"Starts here,"));
        assert!(python.line("can't end here"));
        assert!(python.line("ends here.\"\"\""));
        assert!(!python.line("y = 'oops"));
    }

    #[test]
    fn strings_by_language() {
        assert!(Strings::new("rust").is_none());
        let mut c = Strings::new("c").unwrap();
        assert!(c.line("char q = '\"'; // don't"));
        assert!(c.line("/* it's"));
        assert!(c.line("   still a comment */ int x = 1'000;"));
        assert!(!c.clone().line("printf(\"%d"));
        assert!(c.line("printf(\"line \\"));
        let mut js = Strings::new("javascript").unwrap();
        assert!(js.line("const s = `a"));
        assert!(js.line("b`;"));
        assert!(!js.line("const t = 'x"));
    }

    #[test]
    fn where_a_line_prefix_leaves_the_lexer() {
        let python = Strings::new("python").unwrap();
        assert_eq!(python.in_string_or_comment("x = f(\"ab"), (true, false));
        assert_eq!(python.in_string_or_comment("x = 1  # so"), (false, true));
        assert_eq!(python.in_string_or_comment("x = 1"), (false, false));
    }
}
