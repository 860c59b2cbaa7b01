"""Each distribution installed alone (with eventforge-core from its path) imports and registers.

The development environment has everything installed, which hides a dependency that a
distribution forgot to declare; these throwaway environments do not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from eventforge.testing.venvs import find_uv, make_venv, run_in

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = {
    "eventforge-tcp": "eventforge_tcp",
    "eventforge-redis": "eventforge_redis",
    "eventforge-nats": "eventforge_nats",
    "eventforge-sql": "eventforge_sql",
    "eventforge-amqp": "eventforge_amqp",
    "eventforge-observers": "eventforge_observers",
}
DISTRIBUTIONS = ["eventforge-core", *PLUGINS]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_uv() is None, reason="uv is needed to build throwaway environments"),
]

# For every record the distribution registers whose requirements are installed: load the
# target (this imports the plugin's real dependencies), then print the rows and what it found.
CHECK = """
import json, eventforge
from eventforge.plugins._registry import registry
reg = registry()
loaded = []
for entry in reg.entries():
    if entry.plugin.distribution == {dist!r} and not reg.missing_requirements(entry):
        reg.load(entry)
        loaded.append(entry.spec.kind + ":" + entry.spec.name)
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("alone")

    def build(dist: str) -> Path:
        requirements = [str(ROOT / "eventforge-core")]
        if dist != "eventforge-core":
            requirements.append(str(ROOT / dist))
        return make_venv(base / dist, requirements)

    with ThreadPoolExecutor(max_workers=len(DISTRIBUTIONS)) as pool:
        pythons = dict(zip(DISTRIBUTIONS, pool.map(build, DISTRIBUTIONS), strict=True))
    yield pythons
    shutil.rmtree(base, ignore_errors=True)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_core_alone_pulls_no_driver_and_teaches_what_to_install(venvs: dict[str, Path]) -> None:
    python = venvs["eventforge-core"]
    code = textwrap.dedent(
        """
        import importlib.util, eventforge
        from eventforge import Message
        print([m for m in ("redis", "nats", "eventforge_redis", "eventforge_nats", "msgpack")
               if importlib.util.find_spec(m) is not None])
        with eventforge.connect("memory://?max_queue_size=5") as t:
            t.send(Message("a.b", 1))
            print(t.receive("a.b", timeout=1).payload)
        try:
            from eventforge.transports.redis import RedisTransport
        except ImportError as exc:
            print(exc)
        """
    )
    lines = _ok(run_in(python, ["-c", code])).splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "1"
    assert "pip install eventforge-redis" in lines[2]
    rows = json.loads(_ok(run_in(python, ["-m", "eventforge.cli", "plugins", "--json"])))
    installed = {r["distribution"] for r in rows if not r["status"].startswith("not installed")}
    assert installed == {"eventforge-core"}
    # the first-party plugins that are not installed are listed with their install command
    assert "not installed: pip install eventforge-redis" in {r["status"] for r in rows}
    assert {"memory", "json", "msgpack", "pickle"} <= {r["name"] for r in rows}


@pytest.mark.parametrize("dist", list(PLUGINS))
def test_plugin_alone_imports_and_registers(venvs: dict[str, Path], dist: str) -> None:
    python = venvs[dist]
    _ok(run_in(python, ["-c", f"import {PLUGINS[dist]}"]))
    rows = json.loads(_ok(run_in(python, ["-m", "eventforge.cli", "plugins", "--json"])))
    mine = [r for r in rows if r["distribution"] == dist]
    assert mine, f"{dist} is not listed by `eventforge plugins`: {rows}"
    assert not [r for r in rows if r["status"].startswith("failed")]
    loaded = json.loads(_ok(run_in(python, ["-c", CHECK.format(dist=dist)])))
    listed = [f"{r['kind']}:{r['name']}" for r in mine if r["status"] == "ok"]
    assert sorted(loaded) == sorted(listed)
