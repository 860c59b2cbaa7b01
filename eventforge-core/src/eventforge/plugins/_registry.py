"""The plugin registry: names -> records -> loaded objects.

Discovery (:mod:`eventforge.plugins._discovery`) happens once, lazily, never at ``import eventforge``.
The registry then collects every plugin's frozen records through a typed facade over the hooks,
one plugin at a time, and indexes them by kind and name, alias or URL scheme. Only a selected
record's target is ever imported. Errors say what was asked, what exists and what to install.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from eventforge.errors import PluginConflictError, PluginImportError, PluginNotFoundError
from eventforge.plugins._discovery import (
    DISABLE_ENV,
    STRICT_ENV,
    Discovery,
    PluginInfo,
    discover,
    env_flag,
    prefer_builtins,
    record_failure,
    warn_or_raise,
)
from eventforge.plugins._records import (
    DispatcherSpec,
    MiddlewareSpec,
    ObserverSpec,
    PluginSpec,
    SerializerSpec,
    TransportSpec,
)

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "KINDS",
    "KNOWN_DISTRIBUTIONS",
    "Entry",
    "PluginInfo",
    "Registry",
    "find_export",
    "load_named",
    "plugin_exports",
    "registry",
    "reset_registry",
]

log = logging.getLogger("eventforge.plugins")

KINDS = ("transport", "serializer", "dispatcher", "observer", "middleware")

# Well-known names that live in a distribution of their own: used for "pip install" hints.
KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ("transport", "tcp"): "eventforge-tcp",
    ("transport", "tcps"): "eventforge-tcp",
    ("transport", "redis"): "eventforge-redis",
    ("transport", "rediss"): "eventforge-redis",
    ("transport", "nats"): "eventforge-nats",
    ("transport", "amqp"): "eventforge-amqp",
    ("transport", "amqps"): "eventforge-amqp",
    ("observer", "timing"): "eventforge-observers",
    ("observer", "memory"): "eventforge-observers",
    ("observer", "cpu"): "eventforge-observers",
    ("observer", "metrics"): "eventforge-observers",
    ("observer", "logging"): "eventforge-observers",
    ("observer", "otel"): "eventforge-observers",
    ("observer", "prometheus"): "eventforge-observers",
}
# Scheme-only names: hinted when asked for, never listed among "known but not installed".
SCHEME_ONLY = frozenset({"tcps", "rediss", "amqps"})
KNOWN_EXPORTS: dict[str, str] = {
    "Meter": "eventforge-observers",
    "TimingMeter": "eventforge-observers",
    "MemoryMeter": "eventforge-observers",
    "CPUMeter": "eventforge-observers",
    "MetricsMeter": "eventforge-observers",
    "LoggingReporter": "eventforge-observers",
}


@dataclass(frozen=True)
class Entry:
    """A record together with the plugin that provided it."""

    spec: PluginSpec
    plugin: PluginInfo

    @property
    def provider(self) -> str:
        """``"distribution version"`` of the provider, for messages."""
        return self.plugin.provider


class _Hooks:
    """Typed facade over the plugin manager: one method per hook, so mypy checks callers.

    Each implementation is called on its own so that one plugin's failure is attributed to it
    and does not hide the others' records.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm

    def _collect(
        self, hook_name: str, record_type: type[PluginSpec]
    ) -> tuple[list[tuple[str, PluginSpec]], dict[str, BaseException]]:
        caller = getattr(self._pm.hook, hook_name)
        found: list[tuple[str, PluginSpec]] = []
        failed: dict[str, BaseException] = {}
        for impl in caller.get_hookimpls():
            try:
                records = list(impl.function() or ())
                for record in records:
                    if not isinstance(record, record_type):
                        raise TypeError(
                            f"{hook_name}() returned {type(record).__name__}; expected "
                            f"{record_type.__name__} records"
                        )
            except Exception as exc:
                failed[impl.plugin_name] = exc
                continue
            found.extend((impl.plugin_name, record) for record in records)
        return found, failed

    def transports(self) -> tuple[list[tuple[str, PluginSpec]], dict[str, BaseException]]:
        """Call every ``eventforge_transports`` implementation."""
        return self._collect("eventforge_transports", TransportSpec)

    def serializers(self) -> tuple[list[tuple[str, PluginSpec]], dict[str, BaseException]]:
        """Call every ``eventforge_serializers`` implementation."""
        return self._collect("eventforge_serializers", SerializerSpec)

    def dispatchers(self) -> tuple[list[tuple[str, PluginSpec]], dict[str, BaseException]]:
        """Call every ``eventforge_dispatchers`` implementation."""
        return self._collect("eventforge_dispatchers", DispatcherSpec)

    def observers(self) -> tuple[list[tuple[str, PluginSpec]], dict[str, BaseException]]:
        """Call every ``eventforge_observers`` implementation."""
        return self._collect("eventforge_observers", ObserverSpec)

    def middleware(self) -> tuple[list[tuple[str, PluginSpec]], dict[str, BaseException]]:
        """Call every ``eventforge_middleware`` implementation."""
        return self._collect("eventforge_middleware", MiddlewareSpec)

    def configure(self, config: dict[str, Any]) -> None:
        """Call ``eventforge_configure`` now and for every plugin registered later."""
        self._pm.hook.eventforge_configure.call_historic(kwargs={"config": config})


class Registry:
    """A read-only view of every plugin record, indexed by kind and name, alias or scheme."""

    def __init__(self, discovery: Discovery) -> None:
        self._pm = discovery.pm
        self._infos = discovery.infos
        self.hooks = _Hooks(self._pm)
        self._entries: dict[str, list[Entry]] = {kind: [] for kind in KINDS}
        self._names: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in KINDS}
        self._schemes: dict[str, list[Entry]] = {}
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # a target's import may resolve another plugin
        collected: list[tuple[str, str, PluginSpec]] = []
        failures: dict[str, BaseException] = {}
        for kind, call in zip(
            KINDS,
            (
                self.hooks.transports,
                self.hooks.serializers,
                self.hooks.dispatchers,
                self.hooks.observers,
                self.hooks.middleware,
            ),
            strict=True,
        ):
            found, failed = call()
            collected.extend((kind, plugin, spec) for plugin, spec in found)
            for plugin, exc in failed.items():
                failures.setdefault(plugin, exc)
        for plugin, exc in failures.items():
            record_failure(self._infos, plugin, exc)
        for kind, plugin, spec in collected:
            if plugin in failures:
                continue  # a plugin that failed in one hook contributes nothing
            entry = Entry(spec, self._infos[plugin])
            self._entries[kind].append(entry)
            for key in dict.fromkeys((spec.name, *spec.aliases)):
                self._names[kind].setdefault(key, []).append(entry)
            if isinstance(spec, TransportSpec):
                for scheme in spec.schemes:
                    self._schemes.setdefault(scheme, []).append(entry)
        for kind in KINDS:
            prefer_builtins(self._names[kind], lambda e: e.plugin, f"the {kind} name")
        prefer_builtins(self._schemes, lambda e: e.plugin, "the transport URL scheme")
        for error in self.conflicts():
            warn_or_raise(
                str(error), error, plugin=error.name, distribution=" and ".join(error.providers)
            )

    # -- listing ---------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin that was found, including failed and disabled ones."""
        return list(self._infos.values())

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Every record (of one kind, or all), in registration order."""
        kinds = KINDS if kind is None else (self._check_kind(kind),)
        return [e for k in kinds for e in self._entries[k]]

    def names(self, kind: str) -> list[str]:
        """The primary names of one kind, in registration order."""
        return [e.spec.name for e in self._entries[self._check_kind(kind)]]

    def conflicts(self) -> list[PluginConflictError]:
        """One error for each name, alias or scheme that two plugins claim."""
        found = []
        for kind in KINDS:
            for key, entries in self._names[kind].items():
                error = self._conflict(kind, repr(key), entries)
                if error is not None:
                    found.append(error)
        for scheme, entries in self._schemes.items():
            error = self._conflict("transport", f"URL scheme '{scheme}://'", entries)
            if error is not None:
                found.append(error)
        return found

    def missing_requirements(self, entry: Entry) -> list[str]:
        """Modules of ``entry.spec.requires`` that are not installed (checked, not imported)."""
        missing = []
        for module in entry.spec.requires:
            try:
                if importlib.util.find_spec(module) is None:
                    missing.append(module)
            except (ImportError, ValueError):
                missing.append(module)
        return missing

    def install_hint(self, entry: Entry, missing: Sequence[str] = ()) -> str:
        """The ``pip install`` command that provides ``entry``'s missing requirements.

        A record with an ``extra`` names its distribution's extra
        (``pip install 'eventforge-observers[logfire]'``); otherwise the missing modules.
        """
        if entry.spec.extra:
            return f"pip install '{entry.plugin.distribution}[{entry.spec.extra}]'"
        modules = list(missing) or list(self.missing_requirements(entry))
        return f"pip install {' '.join(modules)}"

    # -- resolution ------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> Entry:
        """Return the record that ``name`` (or an alias) selects, or raise a teaching error."""
        names = self._names[self._check_kind(kind)]
        entries = names.get(name) or names.get(name.strip().lower())
        if entries:
            self._raise_conflict(kind, repr(name), entries)
            return entries[0]
        raise self._not_found(kind, name)

    def transport(self, name_or_url: str) -> Entry:
        """Resolve a transport by name, alias or URL (``redis://host:6379/0``)."""
        if "://" in name_or_url:
            scheme = name_or_url.split("://", 1)[0].lower()
            entries = self._schemes.get(scheme)
            if entries:
                self._raise_conflict("transport", f"URL scheme '{scheme}://'", entries)
                return entries[0]
            raise self._not_found("transport", scheme, url=True)
        return self.get("transport", name_or_url)

    def load(self, entry: Entry) -> Any:
        """Import the record's target (once) and return it; failures chain the original error."""
        key = (entry.spec.kind, entry.spec.name)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            try:
                target = importlib.import_module(entry.spec.module)
                for part in entry.spec.attribute.split("."):
                    target = getattr(target, part)
            except Exception as exc:
                missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
                hint = ""
                if missing and missing.split(".")[0] in entry.spec.requires:
                    fix = (
                        self.install_hint(entry)
                        if entry.spec.extra
                        else f"reinstall {entry.plugin.distribution}, or pip install {missing}"
                    )
                    hint = f" It needs {missing!r}: {fix}."
                raise PluginImportError(
                    f"{entry.spec.kind} {entry.spec.name!r} from {entry.provider} could not be "
                    f"loaded ({entry.spec.target}): {type(exc).__name__}: {exc}.{hint}",
                    plugin=entry.spec.name,
                    distribution=entry.plugin.distribution,
                ) from exc
            self._loaded[key] = target
            return target

    def configure(self, config: dict[str, Any]) -> None:
        """Pass validated settings to every plugin's ``eventforge_configure`` (historic)."""
        self.hooks.configure(config)

    def distribution(self, name: str) -> PluginInfo | None:
        """The first plugin provided by distribution ``name`` (any status), or ``None``."""
        wanted = name.lower().replace("_", "-")
        for info in self._infos.values():
            if info.distribution.lower().replace("_", "-") == wanted:
                return info
        return None

    def absence(self, kind: str, name: str) -> str:
        """Why the well-known ``name`` is not available, and what to do about it."""
        dist = KNOWN_DISTRIBUTIONS.get((kind, name), f"eventforge-{name}")
        info = self.distribution(dist)
        if info is None:
            return (
                f"{dist} is not installed. Install it with: pip install {dist}  "
                f"(or pip install 'eventforge-core[{dist.removeprefix('eventforge-')}]')"
            )
        if info.status == "disabled":
            return f"{info.provider} is disabled by {DISABLE_ENV}; remove it from that list"
        if info.status == "failed":
            return f"{info.provider} failed to load: {info.reason}"
        return (
            f"{info.provider} is installed but registers no {kind} {name!r}; upgrade it "
            f"(pip install -U {dist})"
        )

    # -- errors ----------------------------------------------------------------------------

    @staticmethod
    def _check_kind(kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; choose one of: {', '.join(KINDS)}")
        return kind

    @staticmethod
    def _conflict(kind: str, label: str, entries: Sequence[Entry]) -> PluginConflictError | None:
        plugins = {e.plugin.name: e.plugin for e in entries}
        if len(plugins) < 2:
            return None
        providers = sorted(f"{p.provider} (entry point {p.name!r})" for p in plugins.values())
        return PluginConflictError(
            f"{kind} {label} is claimed by more than one plugin: {' and '.join(providers)}. "
            f"Uninstall one, or disable one with {DISABLE_ENV}={sorted(plugins)[-1]}.",
            kind=kind,
            name=label,
            providers=sorted(p.provider for p in plugins.values()),
        )

    def _raise_conflict(self, kind: str, label: str, entries: Sequence[Entry]) -> None:
        error = self._conflict(kind, label, entries)
        if error is not None:
            raise error

    def _failed_provider(self, kind: str, name: str) -> PluginInfo | None:
        dist = KNOWN_DISTRIBUTIONS.get((kind, name))
        for info in self._infos.values():
            if info.status != "failed":
                continue
            if name in (info.name, info.distribution.removeprefix("eventforge-")) or (
                dist is not None and info.distribution == dist
            ):
                return info
        return None

    def _not_found(self, kind: str, name: str, *, url: bool = False) -> Exception:
        failed = self._failed_provider(kind, name)
        if failed is not None:
            error = PluginImportError(
                f"{kind} {name!r} comes from {failed.provider}, which failed to load: "
                f"{failed.reason}. Fix or reinstall it; `eventforge plugins` shows every "
                "plugin's status.",
                plugin=failed.name,
                distribution=failed.distribution,
            )
            error.__cause__ = failed.error
            return error
        dist = KNOWN_DISTRIBUTIONS.get((kind, name))
        if dist is not None and self.distribution(dist) is None:
            extra = dist.removeprefix("eventforge-")
            return PluginNotFoundError(
                f"{name} is provided by {dist}: pip install {dist}  (or pip install "
                f"'eventforge-core[{extra}]'). It is not installed here; `eventforge plugins` "
                "lists what is.",
                kind=kind,
                name=name,
                installed=sorted(self._schemes if url else self.names(kind)),
                suggestions=[],
                install_hint=f"pip install {dist}",
            )
        disabled = [
            info
            for info in self._infos.values()
            if info.status == "disabled"
            and (kind, name) not in KNOWN_DISTRIBUTIONS
            and name in (info.name, info.distribution.removeprefix("eventforge-"))
        ]
        installed = sorted(self._schemes if url else self.names(kind))
        candidates = list(self._schemes if url else self._names[kind])
        known = sorted(
            (n, dist)
            for (k, n), dist in KNOWN_DISTRIBUTIONS.items()
            if k == kind
            and n not in self._names[kind]
            and (kind != "transport" or n not in self._schemes)
        )
        suggestions = difflib.get_close_matches(
            name,
            [c for c in dict.fromkeys([*candidates, *(n for n, _ in known)]) if c != name],
            n=3,
            cutoff=0.6,
        )
        label = f"transport URL scheme '{name}://'" if url else f"{kind} '{name}'"
        parts = [f"Unknown {label}."]
        if suggestions:
            parts.append("Did you mean " + " or ".join(f"'{s}'" for s in suggestions) + "?")
        if url:
            parts.append(f"Installed schemes: {', '.join(installed) or '(none)'}.")
        else:
            parts.append(f"Installed: {', '.join(installed) or '(none)'}.")
        absent = [(n, d) for n, d in known if n not in SCHEME_ONLY and self.distribution(d) is None]
        if absent:
            by_dist: dict[str, list[str]] = {}
            for n, d in absent:
                by_dist.setdefault(d, []).append(n)
            parts.append(
                "Known but not installed: "
                + ", ".join(f"{', '.join(ns)} (pip install {d})" for d, ns in by_dist.items())
                + "."
            )
        for info in disabled:
            parts.append(
                f"Plugin {info.name!r} ({info.provider}) may provide it but is disabled by "
                f"{DISABLE_ENV}."
            )
        hint = None
        if (kind, name) in KNOWN_DISTRIBUTIONS:
            reason = self.absence(kind, name)
            hint = reason
            if self.distribution(KNOWN_DISTRIBUTIONS[(kind, name)]) is not None:
                parts.append(f"{reason}.")
        parts.append("Run `eventforge plugins` for details.")
        return PluginNotFoundError(
            " ".join(parts),
            kind=kind,
            name=name,
            installed=installed,
            suggestions=suggestions,
            install_hint=hint,
        )


_registry_lock = threading.Lock()
_registry: Registry | None = None
_search_path: tuple[str, ...] | None = None


def registry() -> Registry:
    """Return the process-wide registry, discovering plugins on first use."""
    global _registry
    reg = _registry
    if reg is None:
        with _registry_lock:
            reg = _registry
            if reg is None:
                reg = _registry = Registry(discover(_search_path))
    return reg


def reset_registry(*, search_path: Sequence[str] | None = None) -> None:
    """Forget discovery results so the next :func:`registry` call discovers again.

    For tests and tools: ``search_path`` limits where plugin distributions are looked for
    (default: everything on ``sys.path``); it stays in effect until the next reset.
    """
    global _registry, _search_path
    with _registry_lock:
        _registry = None
        _search_path = tuple(search_path) if search_path is not None else None


def strict_plugins() -> bool:
    """Whether ``EVENTFORGE_STRICT_PLUGINS`` turns discovery problems into errors."""
    return env_flag(STRICT_ENV)


def plugin_exports(kind: str, name: str, attribute: str, *, module: str) -> Any:
    """Resolve ``attribute`` of the seed import path ``module`` through the registry.

    Used by ``eventforge.transports.<name>``: the installed plugin's target module provides the
    names. Raises ``AttributeError`` for dunder lookups and an ``ImportError`` naming the
    distribution to install when the plugin is absent.
    """
    if attribute.startswith("__"):
        raise AttributeError(attribute)
    reg = registry()
    try:
        entry = reg.get(kind, name)
    except PluginNotFoundError:
        raise ImportError(
            f"cannot import {attribute!r} from {module!r}: the {name} {kind} is not available: "
            f"{reg.absence(kind, name)}",
            name=module,
        ) from None
    target_module = _import_target_module(reg, entry)
    if attribute in entry.spec.exports or hasattr(target_module, attribute):
        return getattr(target_module, attribute)
    raise AttributeError(f"module {module!r} has no attribute {attribute!r}")


def _import_target_module(reg: Registry, entry: Entry) -> ModuleType:
    reg.load(entry)
    return sys.modules[entry.spec.module]


def find_export(attribute: str) -> Any:
    """Find a top-level ``eventforge.<attribute>`` export among the installed observers."""
    reg = registry()
    for entry in reg.entries("observer"):
        if attribute in entry.spec.exports:
            return getattr(_import_target_module(reg, entry), attribute)
    dist = KNOWN_EXPORTS.get(attribute)
    if dist is None:
        raise AttributeError(f"module 'eventforge' has no attribute {attribute!r}")
    info = reg.distribution(dist)
    if info is None:
        reason = (
            f"it is provided by {dist}, which is not installed. Install it with: "
            f"pip install {dist}  (or pip install 'eventforge-core[observers]')"
        )
    elif info.status == "disabled":
        reason = f"it is provided by {info.provider}, which is disabled by {DISABLE_ENV}"
    elif info.status == "failed":
        error = PluginImportError(
            f"cannot import {attribute!r} from 'eventforge': {info.provider} failed to load: "
            f"{info.reason}",
            plugin=info.name,
            distribution=info.distribution,
        )
        raise error from info.error
    else:
        reason = f"{info.provider} is installed but exports no {attribute!r}; upgrade it"
    raise ImportError(f"cannot import {attribute!r} from 'eventforge': {reason}", name="eventforge")


def iter_installed(kind: str) -> Iterable[str]:
    """The names of one kind, for completion and messages."""
    return registry().names(kind)


def load_named(kind: str, name: str) -> Any:
    """Resolve and load a plugin by kind and name in one step."""
    reg = registry()
    return reg.load(reg.get(kind, name))
