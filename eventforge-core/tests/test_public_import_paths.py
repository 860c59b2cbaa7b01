"""The seed's import paths resolve through the registry, or fail naming what to install.

``eventforge.transports.tcp|redis|nats`` re-export the installed plugin's classes, and
``from eventforge import TimingMeter`` (and the other observers) finds the observers plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import eventforge
import pytest
from eventforge.errors import PluginImportError, PluginNotFoundError
from eventforge.plugins import plugin_exports, registry, reset_registry
from eventforge.testing.distributions import write_distribution

SEED_PATHS = {
    "tcp": ("eventforge-tcp", "TCPServerTransport"),
    "redis": ("eventforge-redis", "RedisTransport"),
    "nats": ("eventforge-nats", "NatsTransport"),
}


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("EVENTFORGE_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("EVENTFORGE_STRICT_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


def _python(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_disabled_plugins_make_the_seed_import_paths_name_the_distribution() -> None:
    out = _python(
        """
        for stmt in ("from eventforge.transports.tcp import TCPServerTransport",
                     "from eventforge.transports.redis import RedisTransport",
                     "from eventforge.transports.nats import NatsTransport",
                     "from eventforge import TimingMeter"):
            try:
                exec(stmt)
            except ImportError as exc:
                print(type(exc).__name__, exc)
            else:
                print("IMPORTED", stmt)
        import sys
        print(sorted(m for m in ("redis", "nats", "eventforge_redis", "eventforge_nats")
                     if m in sys.modules))
        """,
        EVENTFORGE_DISABLE_PLUGINS="tcp,eventforge-redis,nats,observers",
    )
    lines = out.splitlines()
    for line, (name, (dist, attr)) in zip(lines, SEED_PATHS.items(), strict=False):
        assert line.startswith(
            f"ImportError cannot import {attr!r} from 'eventforge.transports.{name}': the {name} "
            f"transport is not available: {dist} "
        ), line
        assert line.endswith("is disabled by EVENTFORGE_DISABLE_PLUGINS; remove it from that list")
    assert lines[3].startswith(
        "ImportError cannot import 'TimingMeter' from 'eventforge': it is provided by "
        "eventforge-observers "
    )
    assert lines[3].endswith("which is disabled by EVENTFORGE_DISABLE_PLUGINS")
    assert lines[4] == "[]"


def test_not_installed_names_the_distribution_and_the_extra(tmp_path: Path) -> None:
    reset_registry(search_path=[str(tmp_path)])  # nothing but the core is installed here
    for name, (dist, attr) in SEED_PATHS.items():
        with pytest.raises(ImportError) as info:
            plugin_exports("transport", name, attr, module=f"eventforge.transports.{name}")
        assert str(info.value) == (
            f"cannot import {attr!r} from 'eventforge.transports.{name}': the {name} transport is "
            f"not available: {dist} is not installed. Install it with: pip install {dist}  "
            f"(or pip install 'eventforge-core[{name}]')"
        )
        assert info.value.name == f"eventforge.transports.{name}"
    with pytest.raises(ImportError) as info:
        eventforge.__getattr__("TimingMeter")
    assert str(info.value) == (
        "cannot import 'TimingMeter' from 'eventforge': it is provided by eventforge-observers, "
        "which is not installed. Install it with: pip install eventforge-observers  "
        "(or pip install 'eventforge-core[observers]')"
    )
    with pytest.raises(AttributeError):
        eventforge.__getattr__("NoSuchThing")


def test_installed_but_not_registering_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(
        tmp_path,
        "eventforge-redis",
        version="0.0.1",
        entry_points={"redis": "old_ef_redis.plugin"},
        modules={"old_ef_redis.plugin": '"""An old release that registers nothing."""\n'},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry(search_path=[str(tmp_path)])
    with pytest.raises(ImportError) as info:
        plugin_exports("transport", "redis", "RedisTransport", module="eventforge.transports.redis")
    assert str(info.value).endswith(
        "the redis transport is not available: eventforge-redis 0.0.1 is installed but registers "
        "no transport 'redis'; upgrade it (pip install -U eventforge-redis)"
    )


def test_broken_plugin_raises_plugin_import_error_with_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(
        tmp_path,
        "eventforge-nats",
        version="0.0.2",
        entry_points={"nats": "broken_ef_nats"},
        modules={"broken_ef_nats": "raise OSError('disk on fire')\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry(search_path=[str(tmp_path)])
    with pytest.warns(RuntimeWarning, match="disk on fire"):
        registry()
    with pytest.raises(PluginImportError) as info:
        plugin_exports("transport", "nats", "NatsTransport", module="eventforge.transports.nats")
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value.__cause__, OSError)
    assert "eventforge-nats 0.0.2, which failed to load: OSError: disk on fire" in str(info.value)


def test_positive_path_through_the_example_plugin() -> None:
    reg = registry()
    try:
        entry = reg.transport("spool")
    except PluginNotFoundError:
        pytest.skip("eventforge-example-transport is not installed in this environment")
    from eventforge_example_transport import SpoolTransport

    exported = plugin_exports("transport", "spool", "SpoolTransport", module="x.spool")
    assert exported is SpoolTransport
    assert entry.spec.exports == ("SpoolTransport",)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        plugin_exports("transport", "spool", "Nope", module="x.spool")
    with pytest.raises(AttributeError):
        plugin_exports("transport", "spool", "__path__", module="x.spool")


@pytest.mark.parametrize("name", list(SEED_PATHS))
def test_seed_import_paths_resolve_when_the_plugin_is_installed(name: str) -> None:
    dist, attr = SEED_PATHS[name]
    try:
        entry = registry().transport(name)
    except PluginNotFoundError:
        pytest.skip(f"{dist} registers no {name!r} transport in this environment")
    out = _python(
        f"""
        from eventforge.transports.{name} import {attr}
        print({attr}.__module__)
        """
    )
    assert out.strip().startswith(entry.spec.module.split(".")[0])


def test_observer_exports_when_installed() -> None:
    if not any("TimingMeter" in e.spec.exports for e in registry().entries("observer")):
        pytest.skip("eventforge-observers exports no TimingMeter in this environment")
    out = _python("from eventforge import TimingMeter\nprint(TimingMeter.__module__)")
    assert out.startswith("eventforge_observers")
