"""The plugin registry: discovery with isolation, resolution, and errors that teach.

Plugins here are real distributions written to a temporary directory (``*.dist-info`` with
``METADATA`` and ``entry_points.txt``, plus their modules) and put on ``sys.path``.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventforge.errors import PluginConflictError, PluginImportError, PluginNotFoundError
from eventforge.plugins import SerializerSpec, TransportSpec
from eventforge.plugins._registry import registry, reset_registry
from eventforge.testing.distributions import write_distribution

TRANSPORT_PLUGIN = """
from eventforge import hookimpl
from eventforge.plugins import TransportSpec

@hookimpl
def eventforge_transports():
    return [TransportSpec(name={name!r}, target={target!r}, schemes=({name!r},),
                          summary="test transport", requires={requires!r})]
"""


def transport_plugin(name: str, target: str = "", requires: tuple[str, ...] = ()) -> str:
    return TRANSPORT_PLUGIN.format(
        name=name,
        target=target or "eventforge.transports.memory:MemoryTransport",
        requires=requires,
    )


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("EVENTFORGE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("EVENTFORGE_DISABLE_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path where only the distributions a test writes are discovered."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    reset_registry(search_path=[str(root)])
    return root


def test_unknown_transport_error_text(site: Path) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        registry().transport("reddis")
    assert str(info.value) == (
        "Unknown transport 'reddis'. Did you mean 'redis' or 'rediss'? Installed: local, memory, roundtrip. "
        "Known but not installed: amqp (pip install eventforge-amqp), "
        "nats (pip install eventforge-nats), "
        "redis (pip install eventforge-redis), tcp (pip install eventforge-tcp). "
        "Run `eventforge plugins` for details."
    )
    error = info.value
    assert isinstance(error, LookupError)
    assert (error.kind, error.name) == ("transport", "reddis")
    assert error.suggestions == ("redis", "rediss")
    assert error.installed == ("local", "memory", "roundtrip")


@pytest.mark.parametrize(
    ("asked", "dist"),
    [("tcp", "eventforge-tcp"), ("tcps", "eventforge-tcp"), ("rediss", "eventforge-redis")],
)
def test_first_party_transport_not_installed_names_its_distribution(
    site: Path, asked: str, dist: str
) -> None:
    """Not "did you mean 'tcps'?": the name is right, its distribution is missing."""
    for how in (asked, f"{asked}://127.0.0.1:1"):
        with pytest.raises(PluginNotFoundError) as info:
            registry().transport(how)
        message = str(info.value)
        assert message.startswith(f"{asked} is provided by {dist}: pip install {dist} ")
        assert "Did you mean" not in message
        assert info.value.install_hint == f"pip install {dist}"


def test_unknown_name_with_a_third_party_plugin_installed(site: Path) -> None:
    write_distribution(
        site,
        "acme-spool",
        entry_points={"acme": "acme_spool.plugin"},
        modules={"acme_spool.plugin": transport_plugin("spool")},
    )
    with pytest.raises(PluginNotFoundError) as info:
        registry().transport("spol")
    assert str(info.value) == (
        "Unknown transport 'spol'. Did you mean 'spool'? Installed: local, memory, roundtrip, spool. "
        "Known but not installed: amqp (pip install eventforge-amqp), "
        "nats (pip install eventforge-nats), "
        "redis (pip install eventforge-redis), tcp (pip install eventforge-tcp). "
        "Run `eventforge plugins` for details."
    )


def test_unknown_url_scheme_and_serializer_error_text(site: Path) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        registry().transport("memroy://")
    assert str(info.value) == (
        "Unknown transport URL scheme 'memroy://'. Did you mean 'memory'? "
        "Installed schemes: local, memory, roundtrip. Known but not installed: amqp (pip install eventforge-amqp), "
        "nats (pip install eventforge-nats), "
        "redis (pip install eventforge-redis), tcp (pip install eventforge-tcp). "
        "Run `eventforge plugins` for details."
    )
    with pytest.raises(PluginNotFoundError) as info:
        registry().get("serializer", "jsn")
    assert str(info.value) == (
        "Unknown serializer 'jsn'. Did you mean 'json'? Installed: bytes, json, msgpack, pickle. "
        "Run `eventforge plugins` for details."
    )


def test_installed_distribution_without_the_name_is_not_called_missing(site: Path) -> None:
    write_distribution(
        site,
        "eventforge-redis",
        version="0.0.9",
        entry_points={"redis": "fake_ef_redis.plugin"},
        modules={"fake_ef_redis.plugin": '"""Registers nothing yet."""\n'},
    )
    with pytest.raises(PluginNotFoundError) as info:
        registry().transport("redis")
    text = str(info.value)
    assert (
        "Known but not installed: amqp (pip install eventforge-amqp), "
        "nats (pip install eventforge-nats), tcp (pip" in text
    )
    assert "redis (pip install eventforge-redis)" not in text
    assert "eventforge-redis 0.0.9 is installed but registers no transport 'redis'" in text


def test_resolution_by_name_alias_and_url(site: Path) -> None:
    reg = registry()
    assert reg.transport("memory").spec.name == "memory"
    assert reg.transport("mem").spec.name == "memory"
    assert reg.transport("memory://?max_queue_size=3").spec.name == "memory"
    assert reg.get("serializer", "json").plugin.distribution == "eventforge-core"
    with pytest.raises(ValueError, match="unknown plugin kind 'widget'"):
        reg.get("widget", "x")


def test_conflict_names_both_distributions(site: Path) -> None:
    for dist, module in (("acme-one", "acme_one"), ("acme-two", "acme_two")):
        write_distribution(
            site,
            dist,
            version="2.0",
            entry_points={module: f"{module}.plugin"},
            modules={f"{module}.plugin": transport_plugin("dup")},
        )
    with pytest.warns(RuntimeWarning, match="claimed by more than one plugin"):
        reg = registry()
    with pytest.raises(PluginConflictError) as info:
        reg.transport("dup")
    assert str(info.value) == (
        "transport 'dup' is claimed by more than one plugin: acme-one 2.0 (entry point "
        "'acme_one') and acme-two 2.0 (entry point 'acme_two'). Uninstall one, or disable one "
        "with EVENTFORGE_DISABLE_PLUGINS=acme_two."
    )
    assert info.value.providers == ("acme-one 2.0", "acme-two 2.0")
    with pytest.raises(PluginConflictError, match="URL scheme 'dup://'"):
        reg.transport("dup://x")
    assert reg.transport("memory").spec.name == "memory"  # the others are unaffected


def test_conflict_is_an_error_with_strict_plugins(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("acme_a", "acme_b"):
        write_distribution(
            site,
            module,
            entry_points={module: f"{module}.plugin"},
            modules={f"{module}.plugin": transport_plugin("dup3")},
        )
    monkeypatch.setenv("EVENTFORGE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginConflictError, match=r"acme_a 1\.0 .* and acme_b 1\.0"):
        registry()


def test_plugin_claiming_a_built_in_name_loses_with_a_warning_naming_it(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect("memory://") keeps working, even with strict plugins; the claim is reported."""
    write_distribution(
        site,
        "acme-shadow",
        entry_points={"acme_shadow": "acme_shadow.plugin"},
        modules={"acme_shadow.plugin": transport_plugin("memory", target="acme_shadow:Nope")},
    )
    monkeypatch.setenv("EVENTFORGE_STRICT_PLUGINS", "1")
    with pytest.warns(RuntimeWarning) as warned:
        reg = registry()
    messages = [str(w.message) for w in warned]
    assert any(
        "acme-shadow 1.0" in m and "transport URL scheme 'memory'" in m and "built in" in m
        for m in messages
    ), messages
    assert reg.transport("memory://").plugin.distribution == "eventforge-core"
    assert reg.transport("memory").plugin.distribution == "eventforge-core"
    assert reg.conflicts() == []


def test_entry_point_naming_an_attribute_says_it_must_name_a_module(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(
        site,
        "acme-attr",
        entry_points={"acme_attr": "acme_attr.plugin:eventforge_transports"},
        modules={"acme_attr.plugin": transport_plugin("attr")},
    )
    monkeypatch.setenv("EVENTFORGE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginImportError) as info:
        registry()
    cause = str(info.value.__cause__)
    assert "must name a module" in cause
    assert 'write acme_attr = "acme_attr.plugin"' in cause


def test_disabling_a_plugin_resolves_a_conflict(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("acme_c", "acme_d"):
        write_distribution(
            site,
            module.replace("_", "-"),
            entry_points={module: f"{module}.plugin"},
            modules={f"{module}.plugin": transport_plugin("dup2")},
        )
    monkeypatch.setenv("EVENTFORGE_DISABLE_PLUGINS", "acme_d")
    reg = registry()
    assert reg.transport("dup2").plugin.distribution == "acme-c"
    statuses = {p.name: p.status for p in reg.plugins()}
    assert statuses["acme_d"] == "disabled"


BROKEN = """
raise RuntimeError("boom: the driver is missing")
"""


def test_broken_plugin_is_recorded_warned_once_and_isolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "site"
    write_distribution(
        root,
        "eventforge-broken",
        version="0.3",
        entry_points={"broken": "ef_broken_plugin"},
        modules={"ef_broken_plugin": BROKEN},
    )
    write_distribution(
        root,
        "acme-fine",
        entry_points={"fine": "acme_fine.plugin"},
        modules={"acme_fine.plugin": transport_plugin("fine")},
    )
    monkeypatch.syspath_prepend(str(root))
    reset_registry()  # the whole sys.path, real plugins included
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = registry()
        registry()
        reg.transport("memory")
    relevant = [w for w in caught if "broken" in str(w.message)]
    assert len(relevant) == 1
    assert str(relevant[0].message) == (
        "eventforge plugin 'broken' (eventforge-broken 0.3) failed to load and is skipped: "
        "RuntimeError: boom: the driver is missing. Run `eventforge plugins` for details."
    )
    info = next(p for p in reg.plugins() if p.name == "broken")
    assert (info.status, info.distribution, info.version) == ("failed", "eventforge-broken", "0.3")
    assert info.reason == "RuntimeError: boom: the driver is missing"
    # the others are unaffected
    assert reg.transport("fine").plugin.distribution == "acme-fine"
    assert reg.transport("memory").spec.name == "memory"
    # selecting it raises, with the original error chained
    with pytest.raises(PluginImportError) as raised:
        reg.transport("broken")
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert str(raised.value.__cause__) == "boom: the driver is missing"
    assert raised.value.distribution == "eventforge-broken"
    assert "failed to load: RuntimeError: boom" in str(raised.value)
    with pytest.raises(PluginImportError):
        reg.transport("broken://somewhere")


def test_broken_plugin_raises_with_strict_plugins(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(
        site, "acme-broken", entry_points={"broken": "acme_broken"}, modules={"acme_broken": BROKEN}
    )
    monkeypatch.setenv("EVENTFORGE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginImportError, match="EVENTFORGE_STRICT_PLUGINS=1") as raised:
        registry()
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_a_hook_that_raises_or_returns_garbage_fails_only_its_plugin(site: Path) -> None:
    write_distribution(
        site,
        "acme-hooks",
        entry_points={"bad": "acme_hooks_bad", "garbage": "acme_hooks_garbage"},
        modules={
            "acme_hooks_bad": """
                from eventforge import hookimpl
                from eventforge.plugins import SerializerSpec

                @hookimpl
                def eventforge_serializers():
                    return [SerializerSpec(name="fine-ser", target="json:dumps")]

                @hookimpl
                def eventforge_transports():
                    raise KeyError("oops")
            """,
            "acme_hooks_garbage": """
                from eventforge import hookimpl

                @hookimpl
                def eventforge_transports():
                    return ["not a record"]
            """,
        },
    )
    with pytest.warns(RuntimeWarning):
        reg = registry()
    statuses = {p.name: (p.status, p.reason) for p in reg.plugins()}
    assert statuses["bad"] == ("failed", "KeyError: 'oops'")
    assert statuses["garbage"][0] == "failed"
    assert "returned str; expected TransportSpec records" in statuses["garbage"][1]
    # a plugin that failed in one hook contributes nothing from the others either
    assert "fine-ser" not in reg.names("serializer")
    assert reg.names("transport") == ["memory", "local", "roundtrip"]


def test_misspelled_hook_is_reported(site: Path) -> None:
    write_distribution(
        site,
        "acme-typo",
        entry_points={"typo": "acme_typo"},
        modules={
            "acme_typo": """
                from eventforge import hookimpl

                @hookimpl
                def eventforge_transport():
                    return []
            """
        },
    )
    with pytest.warns(RuntimeWarning, match="did you mean 'eventforge_transports'"):
        registry()


def test_same_entry_point_name_in_two_distributions(site: Path) -> None:
    for dist in ("acme-x", "acme-y"):
        module = dist.replace("-", "_")
        write_distribution(
            site,
            dist,
            entry_points={"same": module},
            modules={module: transport_plugin(module.replace("_", "-"))},
        )
    with pytest.warns(RuntimeWarning, match="entry point 'same' is provided by both"):
        reg = registry()
    assert reg.names("transport") == ["memory", "local", "roundtrip", "acme-x"]


def test_disable_by_entry_point_or_distribution_name(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_distribution(
        site,
        "acme-spool",
        entry_points={"spool": "acme_spool2.plugin"},
        modules={"acme_spool2.plugin": transport_plugin("spool")},
    )
    for value in ("spool", "acme-spool", " other , acme-spool "):
        monkeypatch.setenv("EVENTFORGE_DISABLE_PLUGINS", value)
        reset_registry(search_path=[str(site)])
        reg = registry()
        assert [(p.name, p.status) for p in reg.plugins() if p.name == "spool"] == [
            ("spool", "disabled")
        ]
        with pytest.raises(PluginNotFoundError) as info:
            reg.transport("spool")
        assert "Plugin 'spool' (acme-spool 1.0) may provide it but is disabled by " in str(
            info.value
        )
    monkeypatch.setenv("EVENTFORGE_DISABLE_PLUGINS", "")
    reset_registry(search_path=[str(site)])
    assert registry().transport("spool").plugin.status == "ok"


def test_hook_module_loads_without_running_its_package_init(site: Path) -> None:
    write_distribution(
        site,
        "acme-heavy",
        entry_points={"heavy": "acme_heavy.plugin"},
        modules={
            "acme_heavy": 'raise RuntimeError("the package __init__ imports a heavy driver")\n',
            "acme_heavy.plugin": transport_plugin("heavy", target="acme_heavy.transport:Heavy"),
        },
    )
    reg = registry()
    entry = reg.transport("heavy")
    assert "acme_heavy" not in sys.modules
    with pytest.raises(PluginImportError) as info:
        reg.load(entry)  # selecting it imports the package, which fails here
    assert "the package __init__ imports a heavy driver" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_load_imports_the_target_once_and_explains_missing_requirements(site: Path) -> None:
    write_distribution(
        site,
        "acme-needs",
        entry_points={"needs": "acme_needs_plugin"},
        modules={
            "acme_needs_plugin": transport_plugin(
                "needs", target="acme_needs_impl:Needs", requires=("acme_missing_driver",)
            ),
            "acme_needs_impl": "import acme_missing_driver\n",
        },
    )
    reg = registry()
    entry = reg.transport("needs")
    assert reg.missing_requirements(entry) == ["acme_missing_driver"]
    with pytest.raises(PluginImportError) as info:
        reg.load(entry)
    assert "It needs 'acme_missing_driver': reinstall acme-needs, or pip install" in str(info.value)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    memory = reg.transport("memory")
    assert reg.missing_requirements(memory) == []
    assert reg.load(memory) is reg.load(memory)


def test_configure_reaches_every_plugin(site: Path) -> None:
    write_distribution(
        site,
        "acme-conf",
        entry_points={"conf": "acme_conf"},
        modules={
            "acme_conf": """
                from eventforge import hookimpl
                seen = []

                @hookimpl
                def eventforge_configure(config):
                    seen.append(dict(config))
            """
        },
    )
    reg = registry()
    reg.configure({"transport": "memory"})
    reg.configure({"transport": "memory://?max_queue_size=2"})
    seen = sys.modules["acme_conf"].seen
    assert seen == [{"transport": "memory"}, {"transport": "memory://?max_queue_size=2"}]


def test_records_are_frozen_and_validated() -> None:
    spec = TransportSpec(
        name="x",
        target="m:T",
        aliases=["y"],  # type: ignore[arg-type]
        capabilities={"ordered"},  # type: ignore[arg-type]
        schemes=("X",),
    )
    assert spec.aliases == ("y",)
    assert spec.schemes == ("x",)
    assert isinstance(spec.capabilities, frozenset)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "z"  # type: ignore[misc]
    with pytest.raises(ValueError, match="must be 'module:attribute'"):
        TransportSpec(name="x", target="module_only")
    with pytest.raises(ValueError, match="name 'Bad Name' is not valid"):
        SerializerSpec(name="Bad Name", target="m:T")
    with pytest.raises(ValueError, match=r"unknown capabilities \['teleport'\]"):
        TransportSpec(name="x", target="m:T", capabilities=frozenset({"teleport"}))
    with pytest.raises(TypeError, match="aliases must be a sequence of strings"):
        TransportSpec(name="x", target="m:T", aliases="y")  # type: ignore[arg-type]
    assert SerializerSpec(name="x", target="m:T", extra="fast_io").extra == "fast_io"
    with pytest.raises(ValueError, match="extra 'a b' is not a valid extra name"):
        SerializerSpec(name="x", target="m:T", extra="a b")


def test_load_names_the_extra_that_installs_missing_requirements(site: Path) -> None:
    write_distribution(
        site,
        "acme-extra",
        entry_points={"extra": "acme_extra_plugin"},
        modules={
            "acme_extra_plugin": """
                from eventforge import hookimpl
                from eventforge.plugins import ObserverSpec

                @hookimpl
                def eventforge_observers():
                    return [ObserverSpec(name="acme-sdk", target="acme_extra_impl:O",
                                         requires=("acme_missing_sdk",), extra="sdk")]
            """,
            "acme_extra_impl": "import acme_missing_sdk\n",
        },
    )
    reg = registry()
    entry = reg.get("observer", "acme-sdk")
    assert reg.install_hint(entry) == "pip install 'acme-extra[sdk]'"
    with pytest.raises(PluginImportError) as info:
        reg.load(entry)
    assert str(info.value).endswith("It needs 'acme_missing_sdk': pip install 'acme-extra[sdk]'.")


def test_plugins_from_installs_for_the_block_only(tmp_path: Path) -> None:
    from eventforge.testing.distributions import plugins_from

    site = write_distribution(
        tmp_path / "site",
        "acme-temp",
        entry_points={"temp": "acme_temp_plugin"},
        modules={"acme_temp_plugin": transport_plugin("temp")},
    )
    path_before = list(sys.path)
    with plugins_from(site, only=True) as reg:
        assert reg.names("transport") == ["memory", "local", "roundtrip", "temp"]
        assert reg.load(reg.transport("temp://")).__name__ == "MemoryTransport"
    assert sys.path == path_before
    assert "acme_temp_plugin" not in sys.modules
    with pytest.raises(PluginNotFoundError):
        registry().transport("temp")


def test_known_names_are_grouped_by_distribution_and_case_is_forgiven(site: Path) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        registry().get("observer", "timng")
    assert str(info.value) == (
        "Unknown observer 'timng'. Did you mean 'timing'? Installed: (none). "
        "Known but not installed: cpu, logging, memory, metrics, otel, prometheus, timing "
        "(pip install eventforge-observers). Run `eventforge plugins` for details."
    )
    assert registry().get("transport", "Memory").spec.name == "memory"


def test_a_target_may_resolve_another_plugin_while_it_loads(site: Path) -> None:
    write_distribution(
        site,
        "acme-nested",
        entry_points={"nested": "acme_nested_plugin"},
        modules={
            "acme_nested_plugin": transport_plugin("nested", target="acme_nested_impl:T"),
            "acme_nested_impl": """
                from eventforge.plugins._registry import load_named
                T = load_named("transport", "memory")  # resolved during the import
            """,
        },
    )
    reg = registry()
    assert reg.load(reg.transport("nested")).__name__ == "MemoryTransport"
