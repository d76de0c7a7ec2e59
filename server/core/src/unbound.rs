//! Names the code below a blank line reads that nothing above it in the function
//! defines: what a statement written on that line is likely meant to define.
//!
//! A prefix-only model never sees the code after the cursor, so on a line inserted
//! above `for c in chars: res.append(c)` it writes whatever usually comes next, not
//! `res = []`. The names found here start candidates of their own (the engine), and
//! a candidate that binds one is offered first (`candidates::binding_first`).
//!
//! Read from the syntax tree's leaves, so that strings and comments never count,
//! with rules that hold across the supported languages: a name after `.`, `->` or
//! `::` is a member, not a variable; one before `=` at the start of a statement, or
//! after `for`, `let`, `lambda`, `as` and the like, is being bound there; one only
//! ever called is a function defined elsewhere.

use std::collections::HashSet;

use ropey::Rope;
use tree_sitter::{Node, Tree};

use crate::syntax::BLOCK_KINDS;

/// Most names returned: each costs the engine a one-line candidate.
pub const MAX_NAMES: usize = 2;

/// Lines after the cursor line that are read.
const LINES_BELOW: usize = 8;

/// Node kinds of functions, across the supported grammars.
const FUNCTION_KINDS: [&str; 10] = [
    "function_definition",
    "function_declaration",
    "function_item",
    "method_definition",
    "method_declaration",
    "function_expression",
    "arrow_function",
    "closure_expression",
    "func_literal",
    "lambda_expression",
];

/// Words after which a name is being bound, not read.
const BINDING_WORDS: [&str; 13] = [
    "for", "lambda", "as", "let", "mut", "const", "var", "auto", "def", "class", "fn", "func",
    "function",
];

/// One leaf of the tree: its text, and whether it is a plain identifier.
struct Leaf {
    text: String,
    identifier: bool,
    line: usize,
    /// The innermost block around it (a node id).
    block: Option<usize>,
}

/// The names the code after the (blank) line of char index `cursor` reads, within
/// the innermost function around it and the next [`LINES_BELOW`] lines, that
/// - nothing in that function before the cursor line mentions (its parameters
///   included),
/// - are not bound where they first appear below (`x = …`, `for x in`),
/// - are not only called (`len(…)`: a function defined elsewhere),
/// - the file's top level does not mention (imports, globals, functions, types);
///
/// in order of first use, at most [`MAX_NAMES`]. Empty outside a function.
pub fn unbound_names(tree: &Tree, text: &Rope, cursor: usize) -> Vec<String> {
    let cursor = cursor.min(text.len_chars());
    let line = text.char_to_line(cursor);
    let byte = text.char_to_byte(cursor);
    let Some(function) = innermost_function(tree, byte) else {
        return Vec::new();
    };
    let line_start = text.line_to_byte(line);
    let next_line = (line + 1).min(text.len_lines());
    let below_start = text.line_to_byte(next_line);
    let below_end = text
        .line_to_byte((next_line + LINES_BELOW).min(text.len_lines()))
        .min(function.end_byte());
    if below_start >= below_end {
        return Vec::new();
    }
    let mut known: HashSet<String> = leaves(function, function.start_byte()..line_start, text)
        .into_iter()
        .filter(|leaf| leaf.identifier)
        .map(|leaf| leaf.text)
        .collect();
    let below = leaves(function, below_start..below_end, text);
    // The block the cursor line is in: the next line's, when it is as indented (a
    // line inserted among others), else the one tree-sitter puts the cursor in.
    let indent = |l: usize| {
        text.line(l)
            .chars()
            .take_while(|c| matches!(c, ' ' | '\t'))
            .count()
    };
    let cursor_block = match below.first() {
        Some(next) if next.line == next_line && indent(next_line) == indent(line) => next.block,
        _ => tree
            .root_node()
            .descendant_for_byte_range(byte, byte)
            .and_then(|node| {
                if BLOCK_KINDS.contains(&node.kind()) {
                    Some(node.id())
                } else {
                    block_of(node)
                }
            }),
    };
    let mut uses: Vec<(String, bool)> = Vec::new(); // (name, called)
    for (i, leaf) in below.iter().enumerate() {
        if !leaf.identifier {
            continue;
        }
        let before = i.checked_sub(1).map(|b| below[b].text.as_str());
        let after = below.get(i + 1).map(|a| a.text.as_str());
        // A member, or a type (`except KeyError`, `new Map`).
        let member_or_type = |b: &str| {
            matches!(
                b,
                "." | "->" | "::" | "?." | "except" | "raise" | "new" | "instanceof"
            )
        };
        if before.is_some_and(member_or_type) {
            continue;
        }
        let assigned = matches!(after, Some("=" | ":="));
        let top = bracket_depth(&below, i) == 0;
        let bound =
            after_binding_word(&below, i) || binds_at_statement_start(&below, i) || assigned && top;
        if bound {
            // Bound in another branch as indented as the cursor line (`else: x = …`),
            // it may still be meant to be bound here too.
            if leaf.block == cursor_block || indent(leaf.line) != indent(line) {
                known.insert(leaf.text.clone());
            }
            continue;
        }
        if known.contains(&leaf.text) || assigned {
            // Known, or a keyword argument's name (`=` inside brackets).
            continue;
        }
        uses.push((leaf.text.clone(), after == Some("(")));
    }
    if uses.is_empty() {
        return Vec::new();
    }
    let top_level = top_level_names(tree, text);
    let mut names: Vec<String> = Vec::new();
    for (name, _) in &uses {
        let only_called = uses.iter().filter(|(n, _)| n == name).all(|(_, c)| *c);
        if !only_called && !names.contains(name) && !top_level.contains(name) {
            names.push(name.clone());
            if names.len() == MAX_NAMES {
                break;
            }
        }
    }
    names
}

/// The id of the innermost block node around `node`.
fn block_of(node: Node<'_>) -> Option<usize> {
    let mut current = node.parent();
    while let Some(ancestor) = current {
        if BLOCK_KINDS.contains(&ancestor.kind()) {
            return Some(ancestor.id());
        }
        current = ancestor.parent();
    }
    None
}

/// The innermost function node around byte `byte`.
fn innermost_function(tree: &Tree, byte: usize) -> Option<Node<'_>> {
    let mut node = tree.root_node().descendant_for_byte_range(byte, byte);
    while let Some(current) = node {
        if FUNCTION_KINDS.contains(&current.kind()) {
            return Some(current);
        }
        node = current.parent();
    }
    None
}

/// Whether leaf `i` (an identifier) follows a binding word, alone or in a list of
/// names (`for key, value in`, `let (a, b)`).
fn after_binding_word(leaves: &[Leaf], i: usize) -> bool {
    let line = leaves[i].line;
    for leaf in leaves[..i].iter().rev() {
        if leaf.line != line {
            return false;
        }
        match leaf.text.as_str() {
            word if BINDING_WORDS.contains(&word) => return true,
            "," | "(" | ")" | "[" | "]" => {}
            _ if leaf.identifier => {}
            _ => return false,
        }
    }
    false
}

/// Brackets open at leaf `i` since the start of its line.
fn bracket_depth(leaves: &[Leaf], i: usize) -> usize {
    let line = leaves[i].line;
    let mut depth = 0usize;
    for leaf in leaves[..i].iter().rev().take_while(|l| l.line == line) {
        match leaf.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

/// Whether leaf `i` (an identifier) is among the targets of an assignment that
/// starts its line: only names, commas, brackets, declaration words and a type
/// annotation before a `=` or `:=` (`a, b = …`, `let (x, y) = …`, `n: int = 0`).
fn binds_at_statement_start(leaves: &[Leaf], i: usize) -> bool {
    let line = leaves[i].line;
    let start = leaves[..i]
        .iter()
        .rposition(|l| l.line != line)
        .map_or(0, |p| p + 1);
    let mut annotation = false;
    for (k, leaf) in leaves.iter().enumerate().skip(start) {
        if leaf.line != line {
            return false;
        }
        match leaf.text.as_str() {
            "=" | ":=" => return k > i,
            ":" => annotation = true,
            "," | "(" | ")" | "[" | "]" => {}
            word if BINDING_WORDS.contains(&word) => {}
            _ if leaf.identifier || annotation => {}
            _ => return false,
        }
    }
    false
}

/// The leaves of `node` that start within `range` (bytes), in order; comments are
/// left out (their words are not code).
fn leaves(node: Node<'_>, range: std::ops::Range<usize>, text: &Rope) -> Vec<Leaf> {
    let mut found = Vec::new();
    // An explicit stack: a pathological file's tree may be deeper than the stack.
    let mut stack = vec![node];
    while let Some(current) = stack.pop() {
        let (start, end) = (current.start_byte(), current.end_byte());
        if end <= range.start || start >= range.end || current.kind().contains("comment") {
            continue;
        }
        if current.child_count() == 0 {
            if start >= range.start {
                found.push(Leaf {
                    text: text
                        .byte_slice(start..end.min(text.len_bytes()))
                        .to_string(),
                    identifier: current.kind() == "identifier",
                    line: text.byte_to_line(start),
                    block: block_of(current),
                });
            }
            continue;
        }
        stack.extend(
            (0..current.child_count())
                .rev()
                .filter_map(|i| current.child(i)),
        );
    }
    found
}

/// Top-level items longer than this are not read for names (a generated table).
const MAX_TOP_LEVEL_ITEM_BYTES: usize = 4096;

/// Identifiers the file's top level mentions outside its functions and types:
/// imports, globals and constants (from items up to [`MAX_TOP_LEVEL_ITEM_BYTES`]),
/// and the names of its functions and types.
fn top_level_names(tree: &Tree, text: &Rope) -> HashSet<String> {
    let root = tree.root_node();
    let mut names = HashSet::new();
    for i in 0..root.named_child_count() {
        let Some(item) = root.named_child(i) else {
            continue;
        };
        let kind = item.kind();
        let definition = ["function", "class", "struct", "impl", "type", "decorated"]
            .iter()
            .any(|k| kind.contains(k));
        if definition {
            let named = item
                .child_by_field_name("definition")
                .unwrap_or(item)
                .child_by_field_name("name");
            if let Some(name) = named {
                names.insert(
                    text.byte_slice(name.start_byte()..name.end_byte())
                        .to_string(),
                );
            }
            continue;
        }
        if item.end_byte() - item.start_byte() > MAX_TOP_LEVEL_ITEM_BYTES {
            continue;
        }
        names.extend(
            leaves(item, item.start_byte()..item.end_byte(), text)
                .into_iter()
                .filter(|leaf| leaf.identifier)
                .map(|leaf| leaf.text),
        );
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::SyntaxTree;

    /// The names at the `|` of `source`.
    fn names(language_id: &str, source: &str) -> Vec<String> {
        let cursor = source.find('|').expect("a cursor");
        let text = source.replacen('|', "", 1);
        let rope = Rope::from_str(&text);
        let tree = SyntaxTree::default()
            .get(&rope, 0, language_id)
            .expect("a tree");
        unbound_names(&tree, &rope, rope.byte_to_char(cursor))
    }

    #[test]
    fn a_name_read_below_and_never_defined_above_is_found() {
        let source = "import os\n\ndef collect(items):\n    \"\"\"Gathers res.\"\"\"\n    |\n    for item in items:\n        res.append(os.path.basename(item))\n    return res\n";
        assert_eq!(names("python", source), ["res"]);
    }

    #[test]
    fn parameters_locals_members_calls_and_globals_are_not() {
        // `n` is a parameter, `total` bound above, `.real` a member, `helper` only
        // called, `LIMIT` a global, `x` bound where it appears, `key` a keyword
        // argument's name.
        let source = "LIMIT = 3\n\ndef f(n):\n    total = 0\n    |\n    x = n.real\n    helper(total, key=LIMIT)\n    for y, z in range(x):\n        total += y + z\n    n.attr = w = 1\n    return total + w\n";
        assert!(
            names("python", source).is_empty(),
            "{:?}",
            names("python", source)
        );
    }

    #[test]
    fn tuple_and_annotated_targets_are_bound() {
        let source = "def f(a, b):\n    |\n    nb, db = b.numerator, b.denominator\n    size: int = nb + carry\n    return na * db + size\n";
        assert_eq!(names("python", source), ["carry", "na"]);
    }

    #[test]
    fn words_in_strings_and_comments_do_not_count_and_two_names_at_most() {
        let source = "def f(s):\n    |\n    # uses left over\n    print('left over', s)\n    return leftover + encoded + third\n";
        assert_eq!(names("python", source), ["leftover", "encoded"]);
    }

    #[test]
    fn outside_a_function_or_past_its_end_nothing_is_found() {
        assert!(names("python", "|\nprint(res)\n").is_empty());
        let source = "def f():\n    return 1\n|\ndef g():\n    return res\n";
        assert!(names("python", source).is_empty());
    }

    #[test]
    fn other_languages_follow_the_same_rules() {
        let rust = "fn f(items: &[u32]) -> u32 {\n    |\n    for item in items {\n        total += item;\n    }\n    let doubled = total * 2;\n    doubled\n}\n";
        assert_eq!(names("rust", rust), ["total"]);
        let js = "function f(items) {\n  |\n  for (const item of items) {\n    out.push(item.name);\n  }\n  return out;\n}\n";
        assert_eq!(names("javascript", js), ["out"]);
        let go = "package main\n\nfunc f(items []int) int {\n\t|\n\tfor _, item := range items {\n\t\tsum += item\n\t}\n\treturn sum\n}\n";
        assert_eq!(names("go", go), ["sum"]);
    }
}
