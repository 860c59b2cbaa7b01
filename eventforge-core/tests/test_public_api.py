"""The public surface: every exported name resolves, is typed, and is never shadowed by a module."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import eventforge

INIT = Path(eventforge.__file__)


def _type_checking_names() -> set[str]:
    tree = ast.parse(INIT.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    names.update(alias.asname or alias.name for alias in stmt.names)
    return names


def test_every_export_is_declared_for_type_checkers():
    missing = set(eventforge._EXPORTS) - _type_checking_names()
    assert not missing, f"add these to the TYPE_CHECKING block of __init__.py: {sorted(missing)}"


def test_all_lists_every_export():
    assert set(eventforge._EXPORTS) <= set(eventforge.__all__)


def test_every_export_resolves_to_an_object_not_a_module():
    for name in eventforge._EXPORTS:
        value = getattr(eventforge, name)
        assert not inspect.ismodule(value), f"eventforge.{name} is a module"


def test_exports_survive_importing_every_submodule_first():
    # A submodule named like an export would be bound over it on import; none may be.
    code = (
        "import importlib, inspect, pkgutil, eventforge\n"
        "for m in pkgutil.walk_packages(eventforge.__path__, 'eventforge.'):\n"
        "    if '.testing' not in m.name and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = [n for n in eventforge._EXPORTS if inspect.ismodule(getattr(eventforge, n))]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_seed_decorators_are_functions():
    from eventforge import observe, task

    assert inspect.isfunction(observe)
    assert inspect.isfunction(task)
