"""What a user's ``mypy --strict`` sees of the public API.

``typing/user_program.py`` must type-check as written (its ``assert_type`` calls pin the
types), and the mistakes below must be reported: a misspelt top-level import (the lazy module
``__getattr__`` is hidden from type checkers), wrong task arguments (``Executor.submit`` is
ParamSpec-typed) and using a ``request`` reply without checking for ``None``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import eventforge
import pytest
from eventforge.plugins._hints import KNOWN_EXPORTS

USER_PROGRAM = Path(__file__).parent / "typing" / "user_program.py"

MISTAKES = textwrap.dedent(
    """
    from eventforge import Executor, MesageQueue, MessageQueue, TimingMeter

    def square(x: int) -> int:
        return x * x

    def run(queue: MessageQueue) -> None:
        with Executor() as executor:
            executor.submit(square, "x")
        print(queue.request("math.add", {"a": 1}).payload)
    """
)


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy --strict over the user program and the mistakes, in one run: errors per file."""
    pytest.importorskip("mypy")
    directory = tmp_path_factory.mktemp("typing")
    mistakes = directory / "mistakes.py"
    mistakes.write_text(MISTAKES)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(directory / "cache"),
            "--no-error-summary",
            str(USER_PROGRAM),
            str(mistakes),
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    errors: dict[str, list[str]] = {"user_program": [], "mistakes": []}
    for line in done.stdout.splitlines():
        match = re.match(r".*?(user_program|mistakes)\.py:\d+: error: (.*)", line)
        if match:
            errors[match.group(1)].append(match.group(2))
    assert done.returncode in (0, 1), done.stderr
    return errors


def test_user_program_type_checks_strictly(mypy_output: dict[str, list[str]]) -> None:
    assert mypy_output["user_program"] == []


def test_misspelt_top_level_import_is_an_error(mypy_output: dict[str, list[str]]) -> None:
    assert any('no attribute "MesageQueue"' in e for e in mypy_output["mistakes"])


def test_task_arguments_are_checked_against_the_function(
    mypy_output: dict[str, list[str]],
) -> None:
    assert any('"submit" of "Executor"' in e for e in mypy_output["mistakes"])


def test_request_reply_may_be_none(mypy_output: dict[str, list[str]]) -> None:
    assert any('"None" of "Message | None"' in e for e in mypy_output["mistakes"])
    assert len(mypy_output["mistakes"]) == 3, mypy_output["mistakes"]


def test_registry_exports_are_declared_for_type_checkers() -> None:
    """Every name core knows a plugin exports at top level is visible to type checkers."""
    tree = ast.parse(Path(eventforge.__file__).read_text(encoding="utf-8"))
    declared = {
        node.target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert set(KNOWN_EXPORTS) <= declared
