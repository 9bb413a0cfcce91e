"""Imports sit at the top of a module; one that stays inside a function says why in a
comment (what it costs to import and who loads the module without it, or the import cycle
it avoids), on its own line or the line above its run of imports. docs/architecture.md,
"Layers"."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from tests.unit.test_layers import PACKAGES, ROOT, _sources

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_IMPORTS = (ast.Import, ast.ImportFrom)


def _comments(source: str) -> tuple[set[int], set[int]]:
    """(lines with a comment, lines that are only a comment)."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    return {t.start[0] for t in tokens}, {t.start[0] for t in tokens if t.line.lstrip().startswith("#")}


def _runs(body: list[ast.stmt]):
    """Each run of import statements with no other statement between them (blank lines
    may part them, as between the standard library's and txmon's), as a list."""
    run: list[ast.stmt] = []
    for statement in body:
        if isinstance(statement, _IMPORTS):
            run.append(statement)
            continue
        if run:
            yield run
        run = []
    if run:
        yield run


def unexplained_lazy_imports(path: Path) -> list[int]:
    """Lines of the imports inside functions that carry no comment: none on the import's
    own lines, and no comment line just above the first import of its run."""
    source = path.read_text()
    comments, comment_only = _comments(source)
    found: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for field in ast.iter_fields(node):
            value = field[1]
            if isinstance(value, list) and in_function:
                for run in _runs([s for s in value if isinstance(s, ast.stmt)]):
                    explained = run[0].lineno - 1 in comment_only or any(
                        line in comments for s in run for line in range(s.lineno, s.end_lineno + 1)
                    )
                    if not explained:
                        found.extend(s.lineno for s in run)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(child, _FUNCTIONS))

    visit(ast.parse(source, str(path)), False)
    return found


def test_every_import_inside_a_function_says_why():
    bare = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources((*PACKAGES, "dags"))
        for line in unexplained_lazy_imports(path)
    ]
    assert not bare, (
        "imports inside functions without a comment: move each to the top of its module, or say in a "
        "comment why it stays lazy (its measured import cost and who loads the module without it, or "
        "the cycle it avoids):\n" + "\n".join(bare)
    )


def test_the_check_sees_an_unexplained_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import json\n"
        "\n"
        "\n"
        "def explained():\n"
        "    # lazy: pandas costs 300 ms and the CLI loads this module without it\n"
        "    import pandas\n"
        "    from txmon.models import training\n"
        "    import numpy  # lazy: numpy, for the same reason\n"
        "\n"
        "\n"
        "def bare():\n"
        "    x = 1  # a comment on another statement explains nothing\n"
        "    import pandas\n"
        "    from txmon.models import (\n"
        "        training,\n"
        "    )\n"
        "    if x:\n"
        "        import sklearn\n"
        "    return lambda: __import__('os')\n"
        "\n"
        "\n"
        "class C:\n"
        "    def method(self):\n"
        "        s = '# not a comment'\n"
        "        import yaml\n"
    )
    assert unexplained_lazy_imports(source) == [13, 14, 18, 25]
