"""``import eventforge`` stays light: no broker driver, no plugin package, no pydantic or pluggy.

Each check runs in a fresh interpreter, so modules imported by other tests cannot hide an
import that the check is about.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

DRIVERS = ("redis", "nats", "aiormq", "pamqp", "sqlalchemy")
PLUGIN_PACKAGES = ("eventforge_redis", "eventforge_nats", "eventforge_amqp", "eventforge_sql")
HEAVY = ("pydantic", "pluggy")


PRELUDE = """\
import json
import sys


def loaded(names):
    return sorted(n for n in names if n in sys.modules)
"""


def run_python(code: str, watched: tuple[str, ...] = ()) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it must print one JSON object as its last line.

    ``WATCHED`` in the code stands for the tuple of module names to look for.
    """
    script = PRELUDE + textwrap.dedent(code).replace("WATCHED", repr(watched))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_every_plugin_is_installed_so_the_checks_mean_something() -> None:
    result = run_python(
        """
        import importlib.util
        names = ["eventforge_redis", "eventforge_nats", "eventforge_amqp", "eventforge_sql", "eventforge_tcp", "redis", "nats", "aiormq", "sqlalchemy"]
        print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))
        """
    )
    missing = [name for name, found in result.items() if not found]
    if missing:
        pytest.fail(f"the workspace lacks {missing}; install every distribution (uv sync)")


def test_import_eventforge_imports_no_driver_plugin_pydantic_or_pluggy() -> None:
    result = run_python(
        """
        import eventforge
        print(json.dumps({"loaded": loaded(WATCHED), "version": eventforge.__version__}))
        """,
        DRIVERS + PLUGIN_PACKAGES + HEAVY,
    )
    assert result["loaded"] == [], f"import eventforge imported {result['loaded']}"
    assert result["version"]


def test_core_names_import_no_driver_or_plugin_package() -> None:
    result = run_python(
        """
        import eventforge
        touched = []
        for name in ("Message", "MemoryTransport", "Capability", "MessageQueue", "RPCServer",
                     "Executor", "WorkQueue", "task"):
            if name in eventforge._EXPORTS:
                getattr(eventforge, name)
                touched.append(name)
        queue_ok = None
        if "MessageQueue" in touched:
            queue = eventforge.MessageQueue()
            got = []
            queue.subscribe("a.b", got.append)
            queue.publish("a.b", {"x": 1})
            queue.close()
            queue_ok = len(got) == 1
        print(json.dumps({"loaded": loaded(WATCHED), "touched": touched, "queue_ok": queue_ok}))
        """,
        DRIVERS + PLUGIN_PACKAGES,
    )
    assert "MessageQueue" in result["touched"]  # type: ignore[operator]
    assert result["queue_ok"] is True
    assert result["loaded"] == [], f"core names imported {result['loaded']}"


def test_resolving_plugins_by_name_imports_no_driver() -> None:
    result = run_python(
        """
        import eventforge
        names = sorted(entry.spec.name for entry in eventforge.registry().entries("transport"))
        transport = eventforge.connect("memory://")
        transport.close()
        print(json.dumps({"loaded": loaded(WATCHED), "transports": names}))
        """,
        DRIVERS,
    )
    assert "memory" in result["transports"]  # type: ignore[operator]
    assert result["loaded"] == [], f"the registry imported the drivers {result['loaded']}"


def test_plugins_listing_imports_no_driver_or_target() -> None:
    result = run_python(
        """
        import contextlib, io
        from eventforge.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["plugins", "--json"])
        rows = json.loads(out.getvalue())
        targets = tuple(
            row["target"].partition(":")[0]
            for row in rows
            if row.get("target") and not row["target"].startswith("eventforge.")
        )
        print(json.dumps({
            "code": code, "targets": targets, "loaded": loaded(WATCHED + targets)
        }))
        """,
        DRIVERS,
    )
    assert result["code"] == 0
    assert "eventforge_redis.transport" in result["targets"]  # type: ignore[operator]
    assert result["loaded"] == [], f"`eventforge plugins --json` imported {result['loaded']}"
