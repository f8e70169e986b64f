"""Rules of the code's structure that import-linter cannot express."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_alunet

WIDGETS = Path(napari_alunet.__file__).parent / "widgets"


def _generator_functions(path: Path) -> list[str]:
    """Module-level functions and methods of ``path`` that yield. Functions nested in them are
    not counted: napari's mouse-drag callbacks are generators by protocol (press, moves,
    release), and they are not jobs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    top = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    top += [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body
            if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in top:
        # Yields of this function itself, not of functions nested in it.
        body = [n for stmt in node.body for n in ast.walk(stmt)
                if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
        if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in body):
            found.append(f"{path.name}:{node.lineno} {node.name}")
    return found


def test_long_work_lives_in_the_core_not_in_widgets():
    """The widgets run the core's generators in workers; they hold none of their own (the
    worker plumbing in _workers.py excepted), so every job also runs headless."""
    found = [name for path in sorted(WIDGETS.glob("*.py")) if path.name != "_workers.py"
             for name in _generator_functions(path)]
    assert found == [], found


def test_the_rule_sees_a_generator():
    assert _generator_functions(WIDGETS / "_workers.py")  # the plumbing itself does yield
