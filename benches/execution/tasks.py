"""Tasks of the execution benchmark: lines of Python standard-library functions whose
removal makes the module's own tests fail.

    python3 tasks.py SEED PER_MODULE MODULE...

prints a JSON list of tasks, {"module", "file", "line" (0-based), "text"}. For each
module: the simple one-line statements inside function bodies (no docstrings, no
`pass`, nothing sharing its line with another statement), shuffled with SEED; the
first PER_MODULE of them whose replacement by `pass` makes `python3 -m unittest
test.test_MODULE` fail, with the module copied into a directory that shadows the
standard library. A module whose tests do not pass on the unmodified copy gives none.
The tests run with `random` seeded and hashing fixed: several draw their data at
random (test_heapq's merge tests miss a removed line in about 1 run of 15 unseeded),
and a task, or a suggestion's pass, must not depend on the draw.

    python3 tasks.py --run MODULE FILE LINE TEXT

runs the module's tests with line LINE of FILE replaced by TEXT (several lines
allowed) and exits with the tests' status (124 on a time-out).
"""

import ast
import json
import os
import random
import subprocess
import sys
import tempfile

TIMEOUT_S = 20

# `python3 -m unittest test.test_MODULE`, with the random draws made the same on
# every run.
RUNNER = (
    "import random, sys, unittest; random.seed(0); "
    "unittest.main(module='test.test_' + sys.argv[1], argv=['unittest'])"
)


def run_tests(module, file, lines):
    """Whether test.test_MODULE passes with FILE's text replaced by LINES."""
    with tempfile.TemporaryDirectory(prefix="inkling-exec-") as shadow:
        with open(os.path.join(shadow, module + ".py"), "w", encoding="utf-8") as out:
            out.writelines(lines)
        env = dict(
            os.environ, PYTHONPATH=shadow, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", RUNNER, module],
                env=env,
                cwd=shadow,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return 124
        return done.returncode


def candidates(source):
    """0-based line numbers of simple one-line statements in function bodies."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    found = set()
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if node is function or not isinstance(node, ast.stmt):
                continue
            compound = isinstance(
                node,
                (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For,
                 ast.While, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith, ast.Match),
            )
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if compound or docstring or isinstance(node, ast.Pass):
                continue
            if node.lineno != node.end_lineno:
                continue
            text = lines[node.lineno - 1]
            code = text.strip()
            # The statement must be the whole line: no `a; b`, no `if x: y`.
            if len(text) - len(text.lstrip()) != node.col_offset or ";" in code:
                continue
            if len(code) < 6:
                continue
            found.add(node.lineno - 1)
    return sorted(found)


def masked(lines, line):
    indent = lines[line][: len(lines[line]) - len(lines[line].lstrip())]
    return lines[:line] + [indent + "pass\n"] + lines[line + 1:]


def pick(seed, per_module, module, file):
    with open(file, encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines(keepends=True)
    if run_tests(module, file, lines) != 0:
        print(f"skipped {module}: its tests fail on the unmodified copy", file=sys.stderr)
        return []
    order = candidates(source)
    random.Random(f"{seed}:{module}").shuffle(order)
    tasks = []
    tried = 0
    # Bounded: a module whose lines the tests do not notice costs at most this many runs.
    for line in order[: per_module * 4]:
        tried += 1
        if run_tests(module, file, masked(lines, line)) != 0:
            tasks.append({"module": module, "file": file, "line": line, "text": lines[line]})
            if len(tasks) == per_module:
                break
    print(f"{module}: {len(tasks)} tasks from {tried} lines tried", file=sys.stderr)
    return tasks


def main():
    if sys.argv[1] == "--run":
        module, file, line, text = sys.argv[2:6]
        with open(file, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        line = int(line)
        replaced = lines[:line] + [text if text.endswith("\n") else text + "\n"] + lines[line + 1:]
        sys.exit(run_tests(module, file, replaced))
    seed, per_module = sys.argv[1], int(sys.argv[2])
    tasks = []
    for module in sys.argv[3:]:
        file = __import__(module).__file__
        tasks.extend(pick(seed, per_module, module, file))
    json.dump(tasks, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
