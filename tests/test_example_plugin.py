"""The example third-party plugin, installed from its path into a throwaway environment.

Only eventforge-core and the example distribution are installed there: the plugin is found
through its entry point, resolved by name and URL, listed by ``eventforge plugins``, carries
messages between two processes, and passes the conformance suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventforge.testing.venvs import find_uv, make_venv, run_in

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "eventforge-example-transport"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_uv() is None, reason="uv is needed to build throwaway environments"),
]


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("example-venv") / "venv"
    yield make_venv(venv, [str(ROOT / "eventforge-core"), str(EXAMPLE), "pytest"])
    shutil.rmtree(venv, ignore_errors=True)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_resolved_by_name_and_url(python: Path, tmp_path: Path) -> None:
    out = _ok(
        run_in(
            python,
            [
                "-c",
                textwrap.dedent(
                    f"""
                    import eventforge
                    t = eventforge.connect("spool://{tmp_path}/spool?poll_interval=0.02")
                    print(type(t).__module__, type(t).__name__, t.poll_interval)
                    t.close()
                    entry = eventforge.registry().transport("spooldir")
                    print(entry.spec.name, entry.plugin.distribution)
                    """
                ),
            ],
        )
    )
    assert out.splitlines() == [
        "eventforge_example_transport.transport SpoolTransport 0.02",
        "spool eventforge-example-transport",
    ]


def test_listed_by_eventforge_plugins(python: Path) -> None:
    script = python.with_name("eventforge")  # the console script, as a user would run it
    done = subprocess.run([str(script), "plugins", "--json"], capture_output=True, text=True)
    rows = json.loads(_ok(done))
    spool = next(r for r in rows if r["name"] == "spool")
    assert spool["kind"] == "transport"
    assert spool["distribution"] == "eventforge-example-transport"
    assert spool["version"] == "0.1.0"
    assert spool["status"] == "ok"
    assert spool["schemes"] == ["spool"]
    assert "cross_process" in spool["capabilities"]
    installed = {r["distribution"] for r in rows if not r["status"].startswith("not installed")}
    assert installed == {"eventforge-core", "eventforge-example-transport"}


def test_round_trip_between_two_processes(python: Path, tmp_path: Path) -> None:
    url = f"spool://{tmp_path}/rt"
    subscriber = subprocess.Popen(
        [
            str(python),
            "-c",
            textwrap.dedent(
                f"""
                import threading, eventforge
                got = []
                done = threading.Event()
                def on(m):
                    got.append(m.payload)
                    if len(got) == 3:
                        done.set()
                t = eventforge.connect({url!r})
                t.subscribe("greetings.*", on)
                print("ready", flush=True)
                ok = done.wait(30)
                t.close()
                print("received", got if ok else "TIMEOUT", flush=True)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert subscriber.stdout is not None
        assert subscriber.stdout.readline().strip() == "ready"
        _ok(
            run_in(
                python,
                [
                    "-c",
                    textwrap.dedent(
                        f"""
                        import eventforge
                        from eventforge import Message
                        with eventforge.connect({url!r}) as t:
                            for n in range(3):
                                t.send(Message("greetings.world", {{"n": n}}))
                        """
                    ),
                ],
            )
        )
        out, err = subscriber.communicate(timeout=60)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    assert subscriber.returncode == 0, err
    assert out.strip() == "received [{'n': 0}, {'n': 1}, {'n': 2}]"


def test_conformance_suite_passes_in_the_throwaway_environment(
    python: Path, tmp_path: Path
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(EXAMPLE / "tests" / "test_conformance.py", suite / "test_conformance.py")
    done = run_in(python, ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)], cwd=suite)
    out = _ok(done)
    assert " passed" in out
    assert " failed" not in out
