"""The shape the code keeps (ARCHITECTURE.md): no function in the package over 80 lines of
code. Docstrings, comments and blank lines do not count; a longer function is two."""

from __future__ import annotations

import ast
from pathlib import Path

import fastgd

PACKAGE = Path(fastgd.__file__).resolve().parent
MAX_CODE_LINES = 80


def _code_lines(node: ast.AST, source: list[str]) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        if isinstance(first.value.value, str):  # the docstring
            body = body[1:]
    if not body:
        return 0
    lines = range(body[0].lineno, node.end_lineno + 1)
    return sum(1 for n in lines if (text := source[n - 1].strip()) and not text.startswith("#"))


def long_functions(root: Path = PACKAGE, limit: int = MAX_CODE_LINES) -> list[str]:
    """``path:line name (n lines)`` of every function over ``limit`` lines of code."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = _code_lines(node, source)
                if count > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({count})")
    return found


def test_no_function_is_over_80_lines_of_code():
    assert long_functions() == []


def test_the_count_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}  # one line of code" for i in range(81))
    (tmp_path / "m.py").write_text(f'def f():\n    """Doc."""\n\n    # why\n{body}\n')
    assert long_functions(tmp_path) == ["m.py:1 f (81)"]
    assert long_functions(tmp_path, limit=81) == []
