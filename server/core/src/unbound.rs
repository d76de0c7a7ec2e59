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

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use ropey::Rope;
use tree_sitter::{Node, Tree};

use crate::syntax::{BLOCK_KINDS, nests_deeper_than, path_to};

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

/// Most bytes of the lines below that are read: eight lines of code are far less,
/// and a minified or generated line would cost a climb up the tree per name.
const MAX_BYTES_BELOW: usize = 4096;

/// Most levels of nesting, from the root, of the code read: real code nests a few
/// dozen.
const MAX_DEPTH: usize = 128;

/// Most bytes of a function above the cursor that are read: in a longer one (a
/// bundle wrapped in a function) nothing is returned rather than a guess.
const MAX_BYTES_ABOVE: usize = 64 * 1024;

/// Well-known globals that are used without a definition in the file.
const GLOBALS: [&str; 15] = [
    "console",
    "window",
    "document",
    "process",
    "module",
    "exports",
    "require",
    "globalThis",
    "arguments",
    "self",
    "this",
    "super",
    "stdin",
    "stdout",
    "stderr",
];

/// Python's builtins that code reads without calling them (`key=len`,
/// `isinstance(v, float)`, `@property`) and rarely names a local after; `id`, `type`,
/// `map`, `sum`, `max`, `next`, `filter`, `format`… are left out: read without a
/// call, they are as likely a local that needs its definition (`type = url[:semi]`).
const PYTHON_BUILTINS: [&str; 34] = [
    "__file__",
    "__name__",
    "abs",
    "bool",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "classmethod",
    "complex",
    "dict",
    "enumerate",
    "float",
    "frozenset",
    "getattr",
    "hasattr",
    "int",
    "isinstance",
    "issubclass",
    "len",
    "list",
    "object",
    "ord",
    "print",
    "property",
    "range",
    "repr",
    "reversed",
    "setattr",
    "sorted",
    "staticmethod",
    "str",
    "tuple",
    "zip",
];

/// One leaf of the tree: its node and text, and what kind of token it is.
struct Leaf<'t> {
    node: Node<'t>,
    text: String,
    /// A plain identifier (a variable's or a function's name, not a member's).
    identifier: bool,
    /// A type's name (`int`, `String`): an identifier after it is being declared.
    type_like: bool,
    line: usize,
}

/// The names the code after the (blank) line of char index `cursor` reads, within
/// the outermost function around it and the next [`LINES_BELOW`] lines, that
/// - nothing in that function before the cursor line mentions (its parameters
///   included), except inside a block that ended with a `return`, `raise` or
///   `throw` (what it bound does not reach the cursor),
/// - no binding below defines where they are read (see [`Reach`]): a name read
///   before its assignment (`if copier:` above `copier = …`, `x = x + 1`), or after
///   it is bound only in a branch (`if o: tabs = True` then `if tabs:`), still
///   counts,
/// - are not only called (`len(…)`: a function defined elsewhere), not capitalized
///   (types, constants), not paths (`Vec::new`) and not well-known globals,
/// - the file's top level does not mention (imports, globals, functions, types);
///
/// in order of first use, at most [`MAX_NAMES`]. Empty outside a function.
pub fn unbound_names(tree: &Tree, text: &Rope, cursor: usize, language_id: &str) -> Vec<String> {
    let cursor = cursor.min(text.len_chars());
    let line = text.char_to_line(cursor);
    let byte = text.char_to_byte(cursor);
    let Some((function, depth)) = outermost_function(tree, byte) else {
        return Vec::new();
    };
    let line_start = text.line_to_byte(line);
    let next_line = (line + 1).min(text.len_lines());
    let below_start = text.line_to_byte(next_line);
    let below_end = text
        .line_to_byte((next_line + LINES_BELOW).min(text.len_lines()))
        .min(function.end_byte())
        .min(below_start + MAX_BYTES_BELOW);
    if below_start >= below_end || line_start - function.start_byte() > MAX_BYTES_ABOVE {
        return Vec::new();
    }
    // The walks up the tree below cost a node's depth on every step (see `path_to`):
    // code nested deeper than real code is, is left alone.
    let read = function.start_byte()..below_end;
    if depth > MAX_DEPTH || nests_deeper_than(function, read, MAX_DEPTH - depth) {
        return Vec::new();
    }
    let mut exits = HashMap::new();
    let known: HashSet<String> = leaves(function, function.start_byte()..line_start, text)
        .into_iter()
        .filter(|leaf| leaf.identifier && !in_exited_block(leaf.node, line_start, &mut exits))
        .map(|leaf| leaf.text)
        .collect();
    let below = leaves(function, below_start..below_end, text);
    let bound: Vec<bool> = (0..below.len())
        .map(|i| below[i].identifier && binds_here(&below, i))
        .collect();
    let reaches = reaches(&below, &bound);
    let mut uses: Vec<(&str, bool)> = Vec::new(); // (name, called)
    for (i, leaf) in below.iter().enumerate() {
        let name = leaf.text.as_str();
        let before = i.checked_sub(1).map(|b| below[b].text.as_str());
        let after = below.get(i + 1).map(|a| a.text.as_str());
        // A member, or a type (`except KeyError`, `new Map`).
        let member_or_type = |b: &str| {
            matches!(
                b,
                "." | "->" | "::" | "?." | "except" | "raise" | "new" | "instanceof"
            )
        };
        let skipped = !leaf.identifier
            || before.is_some_and(member_or_type)
            || after == Some("::")
            || name.starts_with(|c: char| c.is_uppercase())
            || GLOBALS.contains(&name)
            || language_id == "python" && PYTHON_BUILTINS.contains(&name)
            || known.contains(name)
            || bound[i]
            || reaches
                .iter()
                .any(|reach| reach.name == name && reach.covers(leaf.node));
        if !skipped {
            uses.push((name, after == Some("(")));
        }
    }
    if uses.is_empty() {
        return Vec::new();
    }
    let top_level = top_level_names(tree, text);
    let mut names: Vec<String> = Vec::new();
    for &(name, _) in &uses {
        let only_called = uses.iter().filter(|(n, _)| *n == name).all(|(_, c)| *c);
        if !only_called && !names.iter().any(|n| n == name) && !top_level.contains(name) {
            names.push(name.to_owned());
            if names.len() == MAX_NAMES {
                break;
            }
        }
    }
    names
}

/// Where a binding below defines its name: the reads inside `within` (bytes) that
/// start at `from` or later.
///
/// - A parameter or loop variable (`for x in`, `|x|`, `x =>`) is defined from where
///   it stands to the end of its block.
/// - An assignment's target (`x = …`, `int x = …;`, `x := …`, `let x = …`) from the
///   end of the assignment: its own value reads the name as it was before.
/// - A comprehension's variable (`[p.name for p in ps]`) in the whole comprehension.
/// - A block that runs to its end whenever it starts (`with`, `try`, `finally`,
///   `unsafe`) passes its names on to the block around it.
/// - A name assigned in every branch of an `if` that has an `else` (a branch that
///   returns or raises counts as one) is also defined after the `if`. One assigned
///   in some branches only, or in a loop's body, is not: the code after may run
///   without it.
struct Reach<'a> {
    name: &'a str,
    from: usize,
    within: Range<usize>,
}

impl Reach<'_> {
    fn covers(&self, node: Node<'_>) -> bool {
        node.start_byte() >= self.from.max(self.within.start) && node.end_byte() <= self.within.end
    }
}

/// Statements whose block always runs to its end once it starts.
const PASSING_ON: [&str; 4] = [
    "with_statement",
    "try_statement",
    "finally_clause",
    "unsafe_block",
];

/// The reach of every binding among `below`.
fn reaches<'a>(below: &'a [Leaf<'_>], bound: &[bool]) -> Vec<Reach<'a>> {
    let mut reaches = Vec::new();
    // Assignments in an `if`'s branches: (name, the if, the branch's block id).
    let mut branches: Vec<(&str, Node<'_>, usize)> = Vec::new();
    for (i, leaf) in below.iter().enumerate() {
        if !bound[i] {
            continue;
        }
        let after = below.get(i + 1).map(|a| a.text.as_str());
        let assigned = matches!(after, Some("=" | ":=")) || binds_at_statement_start(below, i);
        let name = leaf.text.as_str();
        let mut from = leaf.node.end_byte();
        let mut statement_found = !assigned;
        let mut block = None;
        let mut current = leaf.node.parent();
        while let Some(node) = current {
            let kind = node.kind();
            if kind.contains("comprehension") || kind == "generator_expression" {
                from = node.start_byte();
                block = Some(node);
                break;
            }
            // A nested function's (or arrow's, or closure's) parameter, or a caught
            // error, reaches no further than the function or the catch clause.
            if BLOCK_KINDS.contains(&kind)
                || FUNCTION_KINDS.contains(&kind)
                || kind == "catch_clause"
            {
                block = Some(node);
                break;
            }
            // A parameter's default (`def f(a=1)`, `function f(a: number = 1)`) is
            // no statement around it.
            if kind.contains("parameter") {
                statement_found = true;
            }
            if !statement_found
                && ["assignment", "declarator", "declaration"]
                    .iter()
                    .any(|k| kind.contains(k))
            {
                from = node.end_byte();
                statement_found = true;
            }
            current = node.parent();
        }
        let Some(block) = block.map(passed_on) else {
            continue;
        };
        reaches.push(Reach {
            name,
            from,
            within: block.byte_range(),
        });
        if let Some(branching) = enclosing_if(block) {
            branches.push((name, branching, block.id()));
        }
    }
    for (k, &(name, branching, _)) in branches.iter().enumerate() {
        let same_if = |&(n, b, _): &(&str, Node<'_>, usize)| n == name && b.id() == branching.id();
        if branches[..k].iter().any(same_if) {
            continue;
        }
        let bound_in = |arm: Node<'_>| {
            branches
                .iter()
                .any(|entry| same_if(entry) && entry.2 == arm.id())
        };
        let every_branch = if_arms(branching).is_some_and(|arms| {
            arms.into_iter()
                .all(|arm| bound_in(arm) || ends_in_exit(arm))
        });
        if every_branch && let Some(around) = block_around(branching).map(passed_on) {
            reaches.push(Reach {
                name,
                from: branching.end_byte(),
                within: around.byte_range(),
            });
        }
    }
    reaches
}

/// `block`, or the block around it while it is the body of a statement that always
/// runs it to its end (see [`PASSING_ON`]).
fn passed_on(block: Node<'_>) -> Node<'_> {
    let mut block = block;
    while let Some(statement) = block.parent().filter(|p| PASSING_ON.contains(&p.kind())) {
        match block_around(statement) {
            Some(around) => block = around,
            None => break,
        }
    }
    block
}

/// The `if` of which `block` is a branch (its body, an `elif`'s or an `else`'s).
fn enclosing_if(block: Node<'_>) -> Option<Node<'_>> {
    let mut current = block.parent();
    while let Some(node) = current {
        match node.kind() {
            "if_statement" | "if_expression" => return Some(node),
            "else_clause" | "elif_clause" | "else" => current = node.parent(),
            _ => return None,
        }
    }
    None
}

/// The blocks of every branch of `branching` (an `if`), when it has an `else` and
/// each branch is a block (not `else if`, which may have no `else` of its own).
fn if_arms(branching: Node<'_>) -> Option<Vec<Node<'_>>> {
    let mut arms = Vec::new();
    let mut has_else = false;
    let mut cursor = branching.walk();
    for child in branching.named_children(&mut cursor) {
        let kind = child.kind();
        if BLOCK_KINDS.contains(&kind) {
            arms.push(child);
        } else if matches!(kind, "else_clause" | "elif_clause" | "else") {
            has_else |= kind != "elif_clause";
            let mut inner = child.walk();
            let block = child
                .named_children(&mut inner)
                .find(|c| BLOCK_KINDS.contains(&c.kind()))?;
            arms.push(block);
        }
    }
    (has_else && arms.len() > 1).then_some(arms)
}

/// The innermost block node around `node`.
fn block_around(node: Node<'_>) -> Option<Node<'_>> {
    let mut current = node.parent();
    while let Some(ancestor) = current {
        if BLOCK_KINDS.contains(&ancestor.kind()) {
            return Some(ancestor);
        }
        current = ancestor.parent();
    }
    None
}

/// Whether `node` is inside a block that ends before byte `before` with a `return`,
/// `raise` or `throw`: what is bound there does not reach past it. `exits` keeps
/// each block's answer (by id): the leaves of one block ask about it again and again.
fn in_exited_block(node: Node<'_>, before: usize, exits: &mut HashMap<usize, bool>) -> bool {
    let mut current = node.parent();
    while let Some(ancestor) = current {
        if ancestor.end_byte() > before {
            // Ancestors only grow: the rest reach the cursor.
            return false;
        }
        if BLOCK_KINDS.contains(&ancestor.kind())
            && *exits
                .entry(ancestor.id())
                .or_insert_with(|| ends_in_exit(ancestor))
        {
            return true;
        }
        current = ancestor.parent();
    }
    false
}

/// Whether a block's last statement leaves the function (`return`, `raise`,
/// `throw`, also as a Rust expression statement).
fn ends_in_exit(block: Node<'_>) -> bool {
    let last = (0..block.named_child_count())
        .rev()
        .filter_map(|i| block.named_child(i))
        .find(|child| !child.kind().contains("comment"));
    let exits = |node: Node<'_>| {
        let kind = node.kind();
        ["return", "raise", "throw"]
            .iter()
            .any(|k| kind.starts_with(k))
    };
    last.is_some_and(|statement| exits(statement) || statement.named_child(0).is_some_and(exits))
}

/// Whether leaf `i` (an identifier) is being bound where it stands: after a binding
/// word (`for x, y in`, `let (a, b)`), among an assignment's targets at the start of
/// its line, before `=` or `:=` (also a C `for (int i = 0;`; a keyword argument's
/// name counts too, which only makes fewer names unbound), after `|` (a closure's),
/// after a type (`int n;`), or in a pattern or parameter list ([`in_pattern`]).
fn binds_here(leaves: &[Leaf<'_>], i: usize) -> bool {
    let before = i.checked_sub(1).map(|b| &leaves[b]);
    let after = leaves.get(i + 1).map(|a| a.text.as_str());
    after_binding_word(leaves, i)
        || binds_at_statement_start(leaves, i)
        || matches!(after, Some("=" | ":="))
        || before.is_some_and(|b| b.type_like || b.text == "|")
        || in_pattern(leaves[i].node)
}

/// Fields of a pattern or parameter that hold code read, not names bound: a match
/// arm's guard (`Some(v) if v > limit =>`), a default (`(a = b) =>`, `def f(a=b)`).
const READ_FIELDS: [&str; 5] = ["condition", "value", "right", "default_value", "type"];

/// Whether `node` stands where a pattern or a parameter list binds it, in any of the
/// grammars: a match arm (`Msg::Quit(code) =>`), a destructuring (`let Point { x, y }`,
/// `const { a, b }`, `const [c, d]`), an arrow's or a nested function's parameters
/// (`x =>`, `(item, i) =>`, `(acc: number) =>`), a caught error (`catch (err)`).
/// Python's `as_pattern` is left to the word `as`: the expression before it is read.
fn in_pattern(node: Node<'_>) -> bool {
    let mut child = node;
    while let Some(parent) = child.parent() {
        let kind = parent.kind();
        // An arrow's lone parameter (`x =>`), a catch clause's (`catch (err)`).
        if is_field(parent, child, "parameter") {
            return true;
        }
        if BLOCK_KINDS.contains(&kind) || FUNCTION_KINDS.contains(&kind) {
            return false;
        }
        // A value pattern (`case cfg.MODE:`, `case mod.Kind():`) reads its names.
        if kind == "dotted_name" && parent.named_child_count() > 1 {
            return false;
        }
        // A renaming destructuring's value binds (`{ data: rows }`).
        let read = kind != "pair_pattern"
            && READ_FIELDS
                .iter()
                .any(|field| is_field(parent, child, field));
        if read {
            return false;
        }
        let pattern = kind.ends_with("_pattern") && kind != "as_pattern";
        // Not C++'s `args...`, an expression.
        let parameters = kind.contains("parameter") && !kind.ends_with("_expansion");
        if pattern || parameters {
            return true;
        }
        child = parent;
    }
    false
}

/// Whether `child` is `parent`'s field `field`.
fn is_field(parent: Node<'_>, child: Node<'_>, field: &str) -> bool {
    parent
        .child_by_field_name(field)
        .is_some_and(|n| n.id() == child.id())
}

/// The outermost function node around byte `byte` (a closure's code reads the names
/// of the function it is in), with its depth: the nodes from the root to it.
fn outermost_function(tree: &Tree, byte: usize) -> Option<(Node<'_>, usize)> {
    let innermost = tree.root_node().descendant_for_byte_range(byte, byte)?;
    path_to(tree.root_node(), innermost)
        .into_iter()
        .enumerate()
        .find(|(_, node)| FUNCTION_KINDS.contains(&node.kind()))
        .map(|(at, node)| (node, at + 1))
}

/// Whether leaf `i` (an identifier) follows a binding word, alone or in a list of
/// names (`for key, value in`, `let (a, b)`).
fn after_binding_word(leaves: &[Leaf<'_>], i: usize) -> bool {
    let line = leaves[i].line;
    for leaf in leaves[..i].iter().rev() {
        if leaf.line != line {
            return false;
        }
        match leaf.text.as_str() {
            word if BINDING_WORDS.contains(&word) => return true,
            "," | "(" | ")" | "[" | "]" | "&" | "*" => {}
            _ if leaf.identifier => {}
            _ => return false,
        }
    }
    false
}

/// Whether leaf `i` (an identifier) is among the targets of an assignment that
/// starts its line: only names, commas, brackets, declaration words and a type
/// annotation before a `=` or `:=` (`a, b = …`, `let (x, y) = …`, `n: int = 0`).
fn binds_at_statement_start(leaves: &[Leaf<'_>], i: usize) -> bool {
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

/// Leaf kinds that are names of variables: plain identifiers, and the shorthand
/// fields of destructuring patterns (`Msg::Move { x, y }`, `const { a, b } = obj`).
const NAME_KINDS: [&str; 3] = [
    "identifier",
    "shorthand_field_identifier",
    "shorthand_property_identifier_pattern",
];

/// The leaves of `node` that start within `range` (bytes), in order; comments are
/// left out (their words are not code).
fn leaves<'t>(node: Node<'t>, range: std::ops::Range<usize>, text: &Rope) -> Vec<Leaf<'t>> {
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
                    node: current,
                    text: text
                        .byte_slice(start..end.min(text.len_bytes()))
                        .to_string(),
                    identifier: NAME_KINDS.contains(&current.kind()),
                    type_like: current.kind().contains("type"),
                    line: text.byte_to_line(start),
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

/// Most bytes of one top-level item read for names (a generated table's name is
/// at its start).
const MAX_TOP_LEVEL_ITEM_BYTES: usize = 4096;

/// Most bytes of top-level items read for names in all.
const MAX_TOP_LEVEL_BYTES: usize = 256 * 1024;

/// Identifiers the file's top level mentions outside its functions and types:
/// imports, globals and constants (the first [`MAX_TOP_LEVEL_ITEM_BYTES`] of each
/// item, [`MAX_TOP_LEVEL_BYTES`] in all), and the names of its functions and types.
fn top_level_names(tree: &Tree, text: &Rope) -> HashSet<String> {
    let root = tree.root_node();
    let mut names = HashSet::new();
    let mut read = 0;
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
        let end = item
            .end_byte()
            .min(item.start_byte() + MAX_TOP_LEVEL_ITEM_BYTES);
        read += end - item.start_byte();
        if read > MAX_TOP_LEVEL_BYTES {
            break;
        }
        names.extend(
            leaves(item, item.start_byte()..end, text)
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
    use crate::syntax::parse_once;

    /// The names at the `|` of `source`.
    fn names(language_id: &str, source: &str) -> Vec<String> {
        let cursor = source.find('|').expect("a cursor");
        let text = source.replacen('|', "", 1);
        let rope = Rope::from_str(&text);
        let tree = parse_once(&rope, language_id).expect("a tree");
        unbound_names(&tree, &rope, rope.byte_to_char(cursor), language_id)
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
    fn code_nested_deeper_than_real_code_is_left_alone() {
        let nested = |depth: usize| {
            format!(
                "def f():\n    |\n    x = {}res{}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert_eq!(names("python", &nested(3)), ["res"]);
        assert!(names("python", &nested(MAX_DEPTH)).is_empty());
        assert!(names("python", &nested(20_000)).is_empty());
    }

    #[test]
    fn names_bound_anywhere_below_and_well_known_globals_are_not_unbound() {
        let python = "def f(paths):\n    |\n    return [p.name for p in paths]\n";
        assert!(names("python", python).is_empty());
        // A closure reads the names of the function it is in.
        let nested = "def f(paths):\n    out = []\n    def visit(p):\n        |\n        out.append(p)\n    return visit\n";
        assert!(names("python", nested).is_empty());
        let js = "function f(xs) {\n  |\n  const ids = xs.map(x => x.id);\n  console.log(ids, Math.max(1, 2));\n}\n";
        assert!(names("javascript", js).is_empty());
        let c = "int f(int n) {\n    |\n    char buf[256];\n    for (int i = 0; i < n; i++) {\n        buf[i] = 0;\n    }\n    return 0;\n}\n";
        assert!(names("c", c).is_empty());
        let rust = "fn f(xs: &[u32]) -> Vec<u32> {\n    |\n    let v = Vec::new();\n    xs.iter().map(|x| x * 2).chain(v).collect()\n}\n";
        assert!(names("rust", rust).is_empty());
        // Python's builtins, read without a call; in JavaScript `sum` is a local.
        let python = "def f(xs):\n    |\n    if isinstance(xs, (float, tuple)):\n        return sorted(xs, key=len)\n    return total\n";
        assert_eq!(names("python", python), ["total"]);
        let js = "function f(xs) {\n  |\n  return xs.map(x => x + sum);\n}\n";
        assert_eq!(names("javascript", js), ["sum"]);
    }

    #[test]
    fn a_name_read_before_its_assignment_or_by_it_is_unbound() {
        // `copier` is read before it is assigned; `count` by its own assignment.
        let source = "def f(x, cls):\n    |\n    if copier:\n        return copier(x)\n    copier = getattr(cls, 'copy', None)\n    count = count + 1\n    return count\n";
        assert_eq!(names("python", source), ["copier", "count"]);
        let rust = "fn f(xs: &[u32]) -> u32 {\n    |\n    let total = total + xs.len() as u32;\n    total\n}\n";
        assert_eq!(names("rust", rust), ["total"]);
    }

    #[test]
    fn a_name_bound_only_in_one_branch_or_a_loop_is_unbound_after_it() {
        let source = "def f(opts):\n    deco = False\n    |\n    for o in opts:\n        if o == '-t': tabs = True\n        if o == '-d': deco = True\n    if tabs and deco:\n        return 2\n";
        assert_eq!(names("python", source), ["tabs"]);
        let js = "function f(xs) {\n  |\n  for (const x of xs) {\n    if (x > 0) { last = x; }\n  }\n  return last;\n}\n";
        assert_eq!(names("javascript", js), ["last"]);
    }

    #[test]
    fn a_name_bound_in_every_branch_or_in_a_loop_it_is_read_in_is_bound() {
        let source = "def f(c, items):\n    |\n    if c:\n        y = 1\n    else:\n        y = 2\n    for item in items:\n        print(item, y)\n";
        assert!(
            names("python", source).is_empty(),
            "{:?}",
            names("python", source)
        );
        let go = "package main\n\nfunc f(c bool) int {\n\t|\n\tif c {\n\t\tn := 1\n\t\treturn n\n\t}\n\treturn 0\n}\n";
        assert!(names("go", go).is_empty(), "{:?}", names("go", go));
    }

    #[test]
    fn with_try_and_a_branch_that_raises_pass_their_names_on() {
        let with = "def f(p):\n    |\n    with open(p) as fh:\n        data = fh.read()\n    return parse(data)\n";
        assert!(
            names("python", with).is_empty(),
            "{:?}",
            names("python", with)
        );
        let attempt = "def f(s):\n    |\n    try:\n        value = int(s)\n    except ValueError:\n        value = 0\n    return value\n";
        assert!(
            names("python", attempt).is_empty(),
            "{:?}",
            names("python", attempt)
        );
        let raising = "def f(x):\n    |\n    if isinstance(x, str):\n        s = x\n    else:\n        raise TypeError(x)\n    return s.upper()\n";
        assert!(
            names("python", raising).is_empty(),
            "{:?}",
            names("python", raising)
        );
        // Without an `else`, the `if` may not run its branch.
        let no_else =
            "def f(x):\n    |\n    if isinstance(x, str):\n        s = x\n    return s.upper()\n";
        assert_eq!(names("python", no_else), ["s"]);
        let rust = "fn f(c: bool) -> u32 {\n    |\n    let n;\n    if c {\n        n = 1;\n    } else {\n        return 0;\n    }\n    n + base\n}\n";
        assert_eq!(names("rust", rust), ["base"]);
    }

    #[test]
    fn what_a_block_that_returned_bound_does_not_reach_the_cursor() {
        // `it` is bound above only in a branch that returns.
        let source = "def f(n, iterable):\n    if n == 1:\n        it = iter(iterable)\n        return [min(it)]\n    |\n    result = [x for x in it]\n    return result\n";
        assert_eq!(names("python", source), ["it"]);
        // A branch that does not return leaves its names known.
        let kept = "def f(n, iterable):\n    if n == 1:\n        it = iter(iterable)\n    |\n    result = [x for x in it]\n    return result\n";
        assert!(names("python", kept).is_empty());
        let js = "function f(n, xs) {\n  if (n === 1) {\n    const it = xs.values();\n    return [it.next()];\n  }\n  |\n  return Array.from(it);\n}\n";
        assert_eq!(names("javascript", js), ["it"]);
    }

    #[test]
    fn names_bound_by_patterns_and_parameter_lists_below_are_not_unbound() {
        let rust = "fn f(m: Msg) -> u32 {\n    |\n    match m {\n        Msg::Quit(code) => code + 1,\n        Msg::Move { x, y } => x + y,\n        Msg::Other(v) if v > limit => v,\n        _ => 0,\n    }\n}\n";
        // `limit`, read in a guard, still needs a definition.
        assert_eq!(names("rust", rust), ["limit"]);
        let rust = "fn f(p: Point) -> u32 {\n    |\n    let Point { x, y: b } = p;\n    x + b\n}\n";
        assert!(names("rust", rust).is_empty());
        let js = "function f(xs, obj) {\n  |\n  const { a, b } = obj;\n  const [c, d] = obj.list;\n  return xs.map((item, i = step) => item + i + a + b + c + d);\n}\n";
        // `step`, a default value, is read.
        assert_eq!(names("javascript", js), ["step"]);
        let js = "function f(xs) {\n  |\n  try {\n    return g(xs);\n  } catch (err) {\n    log(err, fallback);\n  }\n}\n";
        assert_eq!(names("javascript", js), ["fallback"]);
        let js = "function f(res) {\n  |\n  const { data: rows, x } = res;\n  return rows.concat(x);\n}\n";
        assert!(names("javascript", js).is_empty());
        // A parameter reaches no further than its arrow.
        let js = "function f(xs) {\n  |\n  const ids = xs.map((item) => item.id);\n  return [ids, item];\n}\n";
        assert_eq!(names("javascript", js), ["item"]);
        // A value pattern reads its names; a capture pattern binds.
        let python = "def f(p):\n    |\n    match p:\n        case cfg.MODE:\n            return 1\n        case other:\n            return other\n";
        assert_eq!(names("python", python), ["cfg"]);
        let ts = "function f(xs: number[]) {\n  |\n  return xs.reduce((acc: number, x: number) => acc + x, base);\n}\n";
        assert_eq!(names("typescript", ts), ["base"]);
        // The expression before Python's `as` is read.
        let python =
            "def f(p):\n    |\n    with open(path) as handle:\n        return handle.read()\n";
        assert_eq!(names("python", python), ["path"]);
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
