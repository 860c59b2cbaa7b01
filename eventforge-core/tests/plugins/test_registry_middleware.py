"""Middleware as a registry kind: listed, resolved by name, and explained when it cannot be.

Third-party middleware comes from real (tiny) distributions written to a temporary directory,
as in ``test_registry.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventforge import MessageQueue
from eventforge.cli import main
from eventforge.errors import (
    ConfigurationError,
    PluginConflictError,
    PluginImportError,
    PluginNotFoundError,
)
from eventforge.message import Message
from eventforge.middleware import Dedupe, UnknownMiddlewareError, register_middleware
from eventforge.plugins import KINDS, KNOWN_DISTRIBUTIONS, registry, reset_registry
from eventforge.testing.distributions import write_distribution

MIDDLEWARE_PLUGIN = """
from eventforge import hookimpl
from eventforge.middleware import Middleware
from eventforge.plugins import MiddlewareSpec


class Tenant(Middleware):
    def on_send(self, message, send):
        message.headers = {{**message.headers, "tenant": {tenant!r}}}
        send(message)


@hookimpl
def eventforge_middleware():
    return [MiddlewareSpec(name={name!r}, target="{module}:Tenant", aliases=("tenancy",),
                           summary="Stamp a tenant header.")]
"""


def middleware_dist(site: Path, dist: str, module: str, name: str, tenant: str = "acme") -> None:
    write_distribution(
        site,
        dist,
        version="3.1",
        entry_points={module: module},
        modules={module: MIDDLEWARE_PLUGIN.format(name=name, module=module, tenant=tenant)},
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


def test_middleware_is_a_kind_with_the_cores_dedupe() -> None:
    assert "middleware" in KINDS
    entry = registry().get("middleware", "dedupe")
    assert (entry.spec.kind, entry.plugin.distribution) == ("middleware", "eventforge-core")
    assert registry().load(entry) is Dedupe
    assert "dedupe" in registry().names("middleware")


def test_plugins_lists_middleware_as_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    dedupe = next(r for r in rows if (r["kind"], r["name"]) == ("middleware", "dedupe"))
    assert dedupe["distribution"] == "eventforge-core"
    assert dedupe["status"] == "ok"
    assert dedupe["target"] == "eventforge.middleware:Dedupe"

    assert main(["plugins", "--json", "--kind", "middleware"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} <= {"middleware", "plugin"}
    assert "dedupe" in {r["name"] for r in rows if r["kind"] == "middleware"}

    assert main(["plugins", "--kind", "middleware"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.split()[:2] == ["middleware", "dedupe"])
    assert "eventforge-core" in row
    assert "transport" not in {line.split()[0] for line in lines[1:]}


def test_unknown_middleware_name_teaches(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eventforge.dispatch import middleware

    monkeypatch.setattr(middleware, "_REGISTRY", {})
    with pytest.raises(UnknownMiddlewareError) as info:
        MessageQueue(middleware=["dedup"])
    assert str(info.value) == (
        "Unknown middleware 'dedup'. Did you mean 'dedupe'? Installed: dedupe. Add one with "
        "register_middleware(name, factory) or a plugin's eventforge_middleware hook, or pass "
        "'module:attr'. Run `eventforge plugins --kind middleware` for details."
    )
    error = info.value
    # both a configuration error (key) and the registry's lookup error (kind, suggestions)
    assert isinstance(error, ConfigurationError)
    assert error.key == "middleware"
    assert isinstance(error, PluginNotFoundError)
    assert (error.kind, error.name, error.suggestions) == ("middleware", "dedup", ("dedupe",))
    assert error.installed == ("dedupe",)
    # names registered in code are listed and suggested too
    register_middleware("session-carrier", Dedupe)
    with pytest.raises(UnknownMiddlewareError) as info:
        MessageQueue(middleware=["session-carier"])
    assert "Did you mean 'session-carrier'? Registered in code: session-carrier." in str(info.value)


def test_a_plugin_distribution_provides_middleware_by_name_and_alias(site: Path) -> None:
    middleware_dist(site, "acme-tenancy", "acme_tenancy_mw", "acme-tenant")
    entry = registry().get("middleware", "tenancy")
    assert (entry.spec.name, entry.provider) == ("acme-tenant", "acme-tenancy 3.1")
    for name in ("acme-tenant", "tenancy"):
        with MessageQueue(middleware=[name, "dedupe"]) as queue:
            seen: list[Message] = []
            queue.subscribe("orders", seen.append)
            queue.publish("orders", {"n": 1})
            assert [m.headers for m in seen] == [{"tenant": "acme"}]
            assert [type(m).__name__ for m in queue.middleware] == ["Tenant", "Dedupe"]
    # each queue gets its own instance of a class target
    with MessageQueue(middleware=["tenancy"]) as a, MessageQueue(middleware=["tenancy"]) as b:
        assert a.middleware[0] is not b.middleware[0]


def test_plugins_lists_third_party_middleware(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    middleware_dist(site, "acme-tenancy", "acme_tenancy_mw", "acme-tenant")
    assert main(["plugins", "--json", "--kind", "middleware"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["acme-tenant"]["distribution"] == "acme-tenancy"
    assert rows["acme-tenant"]["version"] == "3.1"
    assert rows["acme-tenant"]["aliases"] == ["tenancy"]
    assert rows["acme-tenant"]["status"] == "ok"
    assert rows["dedupe"]["distribution"] == "eventforge-core"


def test_middleware_claimed_twice_names_both_distributions(site: Path) -> None:
    middleware_dist(site, "acme-one", "acme_one_mw", "shared", tenant="one")
    middleware_dist(site, "acme-two", "acme_two_mw", "shared", tenant="two")
    with pytest.warns(RuntimeWarning) as warned:
        registry()
    claimed = [str(w.message) for w in warned if "is claimed by more than one" in str(w.message)]
    # the name and the alias both clash
    assert [t.split(" is ")[0] for t in claimed] == ["middleware 'shared'", "middleware 'tenancy'"]
    with pytest.raises(PluginConflictError) as info:
        MessageQueue(middleware=["shared"])
    assert info.value.providers == ("acme-one 3.1", "acme-two 3.1")
    assert "Uninstall one, or disable one with EVENTFORGE_DISABLE_PLUGINS=" in str(info.value)
    with MessageQueue(middleware=["dedupe"]) as queue:  # the others are unaffected
        assert isinstance(queue.middleware[0], Dedupe)


def test_middleware_of_a_broken_plugin_chains_the_original_error(site: Path) -> None:
    write_distribution(
        site,
        "eventforge-audit",
        entry_points={"audit": "acme_audit_mw"},
        modules={"acme_audit_mw": "raise RuntimeError('audit backend unreachable')\n"},
    )
    with pytest.warns(RuntimeWarning, match="failed to load"):
        registry()
    with pytest.raises(PluginImportError, match="audit backend unreachable") as info:
        MessageQueue(middleware=["audit"])
    assert isinstance(info.value.__cause__, RuntimeError)


def test_known_middleware_not_installed_names_the_distribution(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(KNOWN_DISTRIBUTIONS, ("middleware", "audit"), "eventforge-audit")
    with pytest.raises(UnknownMiddlewareError) as info:
        MessageQueue(middleware=["audt"])
    text = str(info.value)
    assert "Did you mean 'audit'?" in text
    assert "Known but not installed: audit (pip install eventforge-audit)." in text
    with pytest.raises(UnknownMiddlewareError) as info:
        MessageQueue(middleware=["audit"])
    assert info.value.install_hint is not None
    assert "pip install eventforge-audit" in info.value.install_hint
