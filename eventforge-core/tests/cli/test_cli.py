"""The ``eventforge`` command: plugins listing (table, JSON, --kind), --version, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventforge import __version__
from eventforge.cli import COLUMNS, main
from eventforge.plugins._registry import reset_registry
from eventforge.testing.distributions import write_distribution

HEAVY = ("redis", "nats", "eventforge_redis", "eventforge_nats")
ROW_KEYS = {*COLUMNS, "schemes", "entry_point", "target"}


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("EVENTFORGE_DISABLE_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


def _modules_after(code: str) -> tuple[set[str], str]:
    script = f"import sys\n{code}\nprint('MODULES', *sorted(sys.modules))\n"
    env = {**os.environ, "EVENTFORGE_STRICT_PLUGINS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:]), done.stdout


def _top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_import_eventforge_loads_no_plugin_or_driver() -> None:
    modules, _ = _modules_after("import eventforge")
    assert not _top_level(modules) & set(HEAVY)
    assert "pluggy" not in modules  # discovery is lazy


def test_plugins_json_imports_no_plugin_target() -> None:
    modules, out = _modules_after(
        "import eventforge.cli\neventforge.cli.main(['plugins', '--json'])"
    )
    assert not _top_level(modules) & set(HEAVY), sorted(_top_level(modules) & set(HEAVY))
    rows = json.loads(out[: out.index("MODULES ")])
    distributions = {row["distribution"] for row in rows}
    # the plugin distributions were really discovered (their hook modules ran detached)
    assert {"eventforge-core", "eventforge-redis", "eventforge-nats"} <= distributions
    assert "_eventforge_hooks_redis" in modules


def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows
    for row in rows:
        assert set(row) == ROW_KEYS
        assert isinstance(row["aliases"], list)
        assert isinstance(row["capabilities"], list)
    memory = next(r for r in rows if (r["kind"], r["name"]) == ("transport", "memory"))
    assert memory["distribution"] == "eventforge-core"
    assert memory["version"] == __version__
    assert memory["status"] == "ok"
    assert memory["schemes"] == ["memory"]
    assert "zero_copy" in memory["capabilities"]
    assert memory["target"] == "eventforge.transports.memory:MemoryTransport"
    names = {(r["kind"], r["name"]) for r in rows}
    assert {("serializer", "json"), ("serializer", "msgpack"), ("serializer", "pickle")} <= names


def test_kind_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json", "--kind", "serializer"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} <= {"serializer", "plugin"}
    assert {r["name"] for r in rows if r["kind"] == "serializer"} >= {"json", "msgpack", "pickle"}
    with pytest.raises(SystemExit):
        main(["plugins", "--kind", "widget"])


def test_wide_table_shows_every_column_whole(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--kind", "transport", "--wide"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [c.upper() for c in COLUMNS]
    memory = next(line for line in lines if line.split()[:2] == ["transport", "memory"])
    assert "mem, inprocess" in memory
    assert "eventforge-core" in memory
    assert memory.split()[-1] == "default)."  # the summary is the last column, untruncated


def test_failed_disabled_and_missing_plugins_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site,
        "acme-broken",
        version="0.2",
        entry_points={"broken": "acme_cli_broken"},
        modules={"acme_cli_broken": "raise RuntimeError('boom')\n"},
    )
    write_distribution(
        site, "acme-off", entry_points={"off": "acme_cli_off"}, modules={"acme_cli_off": ""}
    )
    write_distribution(
        site,
        "acme-needs",
        entry_points={"needs": "acme_cli_needs"},
        modules={
            "acme_cli_needs": """
                from eventforge import hookimpl
                from eventforge.plugins import TransportSpec

                @hookimpl
                def eventforge_transports():
                    return [TransportSpec(name="needs", target="acme_cli_needs_impl:T",
                                          requires=("acme_absent_driver",),
                                          capabilities=frozenset({"cross_process"}))]
            """,
            "acme_cli_needs_impl": "raise AssertionError('listing must not import targets')\n",
        },
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("EVENTFORGE_STRICT_PLUGINS", "1")  # the listing still works
    monkeypatch.setenv("EVENTFORGE_DISABLE_PLUGINS", "acme-off")
    reset_registry(search_path=[str(site)])
    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["broken"]["status"] == "failed: RuntimeError: boom"
    assert (rows["broken"]["kind"], rows["broken"]["distribution"]) == ("plugin", "acme-broken")
    assert rows["off"]["status"] == "disabled"
    assert rows["needs"]["status"] == (
        "missing: acme_absent_driver (pip install acme_absent_driver)"
    )
    assert rows["needs"]["capabilities"] == ["cross_process"]
    assert "acme_cli_needs_impl" not in sys.modules
    assert os.environ["EVENTFORGE_STRICT_PLUGINS"] == "1"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"eventforge {__version__} ")


@pytest.mark.parametrize("columns", [80, 100])
def test_table_fits_the_terminal_width(
    columns: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= columns
    assert lines[0].split()[:5] == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "STATUS"]
    memory = next(line for line in lines if line.split()[:2] == ["transport", "memory"])
    assert "eventforge-core" in memory
    assert not any(line.endswith("…") for line in lines)  # wrapped or left out, never cut


def test_known_first_party_plugins_not_installed_are_listed_with_their_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reset_registry(search_path=[str(tmp_path)])  # nothing but the built-ins
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plugins", "--kind", "transport"]) == 0
    table = capsys.readouterr().out
    assert max(map(len, table.splitlines())) <= 80
    assert main(["plugins", "--kind", "transport", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, dist in (("tcp", "eventforge-tcp"), ("redis", "eventforge-redis")):
        assert rows[name]["status"] == f"not installed: pip install {dist}"
        assert rows[name]["distribution"] == dist
    assert "tcps" not in rows  # a scheme alias, not a plugin of its own
    assert rows["memory"]["status"] == "ok"
    assert "pip install eventforge-nats" in " ".join(table.split())


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "plugins" in captured.err
    assert "a command is required" in captured.err
    assert "exit status:" in captured.err
    with pytest.raises(SystemExit) as exit_info:
        main(["plugins", "--bogus"])
    assert exit_info.value.code == 2


def test_demo_walks_through_the_2x2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--count", "4", "--local"]) == 0
    out = capsys.readouterr().out
    assert "memory" in out.split("== Publish/subscribe")[0]
    assert out.count("audit      got orders.created") == 4
    assert out.count("packer-1   got") == 2
    assert out.count("packer-2   got") == 2
    assert "math.add [2, 3] -> 5" in out
    assert "client.divide(10, 4) -> 2.5" in out
    assert "raised RemoteError: ZeroDivisionError" in out
    assert "raised MethodNotFound" in out
    for mode in ("SEQUENTIAL", "THREAD", "PROCESS"):
        assert f"{mode:10} map(square, [1, 2, 3, 4]) -> [1, 4, 9, 16]" in out
    assert "status=FAILED" in out
    assert "direct call shout('hello') -> 'HELLO'" in out
    assert "published result on shout.success: 'WORLD'" in out
    assert "dead letters: [('poison', 3)]" in out
    assert "Remote:" not in out


def test_demo_calls_a_worker_in_another_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventforge.cli", "demo", "--count", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "square(12) -> 144 computed by pid" in done.stdout
    served_by = int(done.stdout.split("computed by pid ")[1].split()[0])
    here = int(done.stdout.split("this process is pid ")[1].split(")")[0])
    assert served_by != here
    assert "exit code 0" in done.stdout
    # It ends with a service run by `eventforge run` and its /health as a table.
    assert "demo-service: ready" in done.stdout
    assert "service drained and stopped on SIGTERM (exit code 0)" in done.stdout
    # local://: the greeting published before its listener started is answered by another pid
    assert "reply: hello ada, from pid" in done.stdout
    replied_by = int(done.stdout.split("hello ada, from pid ")[1].split()[0])
    assert replied_by != here
    assert "the listener exited with code 0" in done.stdout


def test_console_script_runs() -> None:
    script = Path(sys.executable).with_name("eventforge")
    if not script.exists():
        pytest.skip("the eventforge console script is not installed next to this interpreter")
    done = subprocess.run(
        [str(script), "plugins", "--kind", "transport"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "memory" in done.stdout


def test_missing_requirements_hint_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site,
        "acme-observe",
        entry_points={"observe": "acme_cli_observe"},
        modules={
            "acme_cli_observe": """
                from eventforge import hookimpl
                from eventforge.plugins import ObserverSpec

                @hookimpl
                def eventforge_observers():
                    return [
                        ObserverSpec(name="acme-sdk", target="acme_cli_observe_impl:O",
                                     requires=("acme_absent_sdk",), extra="sdk"),
                        ObserverSpec(name="acme-plain", target="acme_cli_observe_impl:P",
                                     requires=("acme_absent_lib",)),
                    ]
            """,
        },
    )
    monkeypatch.syspath_prepend(str(site))
    reset_registry(search_path=[str(site)])
    assert main(["plugins", "--json", "--kind", "observer"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert (
        rows["acme-sdk"]["status"] == "missing: acme_absent_sdk (pip install 'acme-observe[sdk]')"
    )
    assert rows["acme-plain"]["status"] == "missing: acme_absent_lib (pip install acme_absent_lib)"


def test_observers_that_need_an_extra_are_hinted_with_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util

    from eventforge.plugins._registry import registry

    pytest.importorskip("eventforge_observers")
    reg = registry()
    for name, extra in (("logfire", "logfire"), ("otel", "otel"), ("prometheus", "prometheus")):
        entry = reg.get("observer", name)
        assert entry.plugin.distribution == "eventforge-observers"
        assert reg.install_hint(entry) == f"pip install 'eventforge-observers[{extra}]'"
    assert main(["plugins", "--json", "--kind", "observer"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, module in (("logfire", "logfire"), ("prometheus", "prometheus_client")):
        if importlib.util.find_spec(module) is None:
            assert rows[name]["status"] == (
                f"missing: {module} (pip install 'eventforge-observers[{name}]')"
            )
        else:
            assert rows[name]["status"] == "ok"
