"""Every ```python block in README.md and docs/**/*.md runs and type-checks, so the docs cannot rot.

One test per file. The blocks of a file run in order in one namespace (a later block may use
what an earlier one defined), with the working directory set to a fresh temporary directory.
A block whose preceding line is ``<!-- skip-test -->`` is not run. When a file mentions
``REDIS_URL``, ``NATS_URL`` or ``POSTGRES_URL``, the session's private test broker is started and its URL put in
that variable, so examples written as ``os.environ.get("REDIS_URL", "redis://localhost:6379/0")``
talk to it. Tracebacks point at the Markdown file and line, and a failure shows the block and
what it printed. An example must clean up after itself: threads it leaves running fail the test.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_MARKER = "<!-- skip-test -->"
PYTHON_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
PYTHON_INFOS = {"python", "py", "python3"}
THREAD_GRACE = 5.0
"""How long threads an example started may take to finish after its last block."""


@dataclass(frozen=True)
class Block:
    """One fenced code block: its 1-based first code line, its code, and whether to skip it."""

    line: int
    code: str
    skip: bool


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    files = [ROOT / "README.md"] if (ROOT / "README.md").exists() else []
    files += sorted((ROOT / "docs").glob("**/*.md"))
    return files


def python_blocks(text: str) -> list[Block]:
    """Return the ```python blocks of a Markdown text (fences inside lists are dedented)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = PYTHON_FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        info = match.group("info").strip().split(" ")[0].lower() if match.group("info") else ""
        start = i + 1
        end = start
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            end += 1
        if info in PYTHON_INFOS:
            body = [
                line[len(indent) :] if line.startswith(indent) else line
                for line in lines[start:end]
            ]
            previous = next(
                (lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), ""
            )
            blocks.append(
                Block(line=start + 1, code="\n".join(body) + "\n", skip=previous == SKIP_MARKER)
            )
        i = end + 1
    return blocks


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _failure(path: Path, block: Block, number: int, output: str, exc: BaseException) -> str:
    code = "".join(
        f"{block.line + n:5d} | {line}\n" for n, line in enumerate(block.code.splitlines())
    )
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return (
        f"{_relative(path)}: python block #{number} (line {block.line}) raised "
        f"{type(exc).__name__}: {exc}\n\n"
        f"--- the block ---\n{code}\n"
        f"--- what it printed ---\n{output or '(nothing)'}\n\n"
        f"--- traceback (file names and lines are the Markdown file's) ---\n{trace}\n"
        f"Fix the example, or put {SKIP_MARKER} on the line before the block if it cannot run "
        "in a test."
    )


def run_blocks(path: Path, blocks: list[Block]) -> str:
    """Run ``blocks`` in one namespace; return everything they printed; fail with context."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(path)}
    printed: list[str] = []
    for number, block in enumerate(blocks, start=1):
        if block.skip:
            continue
        # Pad with blank lines so that tracebacks show the line numbers of the Markdown file.
        source = "\n" * (block.line - 1) + block.code
        out = io.StringIO()
        try:
            code = compile(source, str(path), "exec")
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, pytest.fail.Exception)):
                raise
            pytest.fail(_failure(path, block, number, out.getvalue(), exc), pytrace=False)
        printed.append(out.getvalue())
    return "".join(printed)


def _leftover_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    deadline = time.monotonic() + THREAD_GRACE
    while True:
        left = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
        ]
        if not left or time.monotonic() >= deadline:
            return left
        left[0].join(max(0.0, min(0.1, deadline - time.monotonic())))


FILES = doc_files()


@pytest.fixture(scope="session")
def docs_postgres() -> Any:
    """A private PostgreSQL for the examples that mention ``POSTGRES_URL``."""
    from eventforge.testing.brokers import BrokerUnavailable
    from eventforge.testing.pytest_plugin import require_brokers
    from eventforge_sql.testing import PostgresServer

    try:
        server = PostgresServer().start()
    except BrokerUnavailable as exc:
        if require_brokers():
            pytest.fail(f"PostgreSQL required (EVENTFORGE_REQUIRE_BROKERS=1): {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.cleanup()


@pytest.mark.parametrize("path", FILES, ids=[_relative(p) for p in FILES])
def test_doc_examples_run(
    path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    text = path.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    runnable = [b for b in blocks if not b.skip]
    if not runnable:
        pytest.skip(f"{_relative(path)} has no python block to run")
    code = "".join(b.code for b in runnable)
    if "REDIS_URL" in code:
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_server").url)
    if "NATS_URL" in code:
        monkeypatch.setenv("NATS_URL", request.getfixturevalue("nats_server").url)
    if "POSTGRES_URL" in code:
        monkeypatch.setenv("POSTGRES_URL", request.getfixturevalue("docs_postgres").url)
    monkeypatch.chdir(tmp_path)
    before = set(threading.enumerate())
    printed = run_blocks(path, blocks)
    print(printed, end="")  # shown by pytest -s / -rP
    left = _leftover_threads(before)
    assert not left, (
        f"{_relative(path)}: the examples left threads running ({', '.join(t.name for t in left)}); "
        "close queues, transports and servers at the end of the example.\n"
        f"--- what the blocks printed ---\n{printed}"
    )


def as_module(blocks: list[Block]) -> str:
    """The blocks as one module, each at its Markdown line (so errors point at the file)."""
    lines: list[str] = []
    for block in blocks:
        lines += [""] * (block.line - 1 - len(lines))
        lines += block.code.splitlines()
    return "\n".join(lines) + "\n"


def test_doc_examples_type_check(tmp_path: Path) -> None:
    """mypy (default settings: annotated code is checked, ``None`` is not a ``Message``) accepts
    the examples as a user's type checker would, each file's blocks as one module."""
    pytest.importorskip("mypy")
    modules: dict[str, str] = {}
    for path in FILES:
        runnable = [b for b in python_blocks(path.read_text(encoding="utf-8")) if not b.skip]
        if runnable:
            name = re.sub(r"\W", "_", _relative(path).removesuffix(".md")) + ".py"
            (tmp_path / name).write_text(as_module(runnable), encoding="utf-8")
            modules[name] = _relative(path)
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".cache")]
    done = subprocess.run(
        [*command, "--no-error-summary", "--config-file", "", *modules],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=110,
    )
    errors = []
    for line in done.stdout.splitlines():
        match = re.match(r"(\S+\.py):(\d+): (error: .*)", line)
        if match:
            errors.append(f"{modules[match.group(1)]}:{match.group(2)}: {match.group(3)}")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert not errors, "the documentation's examples do not type-check:\n" + "\n".join(errors)


# -- the harness itself ------------------------------------------------------------------------

SAMPLE = """\
Intro.

```python
x = 1
```

<!-- skip-test -->
```python
raise SystemExit("never run")
```

```bash
echo not python
```

1. In a list:

   ```py
   y = x + 1
   print(y)
   ```

````python
z = '''
```
'''
````
"""


def test_blocks_are_found_with_lines_skips_and_indentation() -> None:
    blocks = python_blocks(SAMPLE)
    assert [(b.line, b.skip) for b in blocks] == [(4, False), (9, True), (19, False), (24, False)]
    assert blocks[2].code == "y = x + 1\nprint(y)\n"
    assert blocks[3].code == "z = '''\n```\n'''\n"


def test_blocks_share_a_namespace_and_output_is_captured(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    doc.write_text(SAMPLE)
    assert run_blocks(doc, python_blocks(SAMPLE)) == "2\n"


def test_failure_names_file_line_and_output(tmp_path: Path) -> None:
    text = "# Title\n\n```python\nprint('before')\nvalue = {}['missing']\n```\n"
    doc = tmp_path / "broken.md"
    doc.write_text(text)
    with pytest.raises(pytest.fail.Exception) as info:
        run_blocks(doc, python_blocks(text))
    message = str(info.value)
    assert "python block #1 (line 4) raised KeyError: 'missing'" in message
    assert "before" in message
    assert f'File "{doc}", line 5' in message


def test_every_documentation_file_is_collected() -> None:
    assert ROOT / "README.md" in FILES
    assert all(p.suffix == ".md" for p in FILES)
