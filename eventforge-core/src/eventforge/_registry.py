"""The plugin registry: names -> records -> loaded objects.

Discovery happens once, lazily (never at ``import eventforge``): a cached factory builds a
pluggy manager, registers the core's built-ins through the same hooks as everyone else, then
loads the ``eventforge`` entry points one by one so that a broken plugin is recorded and never
breaks the others. Resolution is by name, alias or URL scheme; errors say what exists and what
to install.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import PluginConflictError, PluginImportError, PluginNotFoundError
from .plugins import DispatcherSpec, ObserverSpec, PluginSpec, SerializerSpec, TransportSpec

if TYPE_CHECKING:
    import pluggy

if sys.version_info >= (3, 12):
    from importlib import metadata
else:  # pragma: no cover - depends on the interpreter
    try:
        import importlib_metadata as metadata
    except ImportError:
        from importlib import metadata

__all__ = [
    "KINDS",
    "Entry",
    "PluginInfo",
    "Registry",
    "get_plugin_manager",
    "plugin_exports",
    "registry",
    "reset_registry",
]

log = logging.getLogger("eventforge.plugins")

ENTRY_POINT_GROUP = "eventforge"
KINDS = ("transport", "serializer", "dispatcher", "observer")
BUILTIN_PLUGINS = ("eventforge._builtins",)
CORE_DISTRIBUTION = "eventforge-core"

# Well-known names that live in a distribution of their own: used for "pip install" hints.
KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ("transport", "tcp"): "eventforge-tcp",
    ("transport", "tcps"): "eventforge-tcp",
    ("transport", "redis"): "eventforge-redis",
    ("transport", "rediss"): "eventforge-redis",
    ("transport", "nats"): "eventforge-nats",
    ("observer", "timing"): "eventforge-observers",
    ("observer", "memory"): "eventforge-observers",
    ("observer", "cpu"): "eventforge-observers",
    ("observer", "metrics"): "eventforge-observers",
    ("observer", "logging"): "eventforge-observers",
    ("observer", "otel"): "eventforge-observers",
    ("observer", "prometheus"): "eventforge-observers",
}
KNOWN_EXPORTS: dict[str, str] = {
    "Meter": "eventforge-observers",
    "TimingMeter": "eventforge-observers",
    "MemoryMeter": "eventforge-observers",
    "CPUMeter": "eventforge-observers",
    "MetricsMeter": "eventforge-observers",
    "LoggingReporter": "eventforge-observers",
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_list(name: str) -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())


@dataclass
class PluginInfo:
    """One plugin (an entry point or a built-in module) and how loading it went."""

    name: str
    distribution: str
    version: str
    status: str = "ok"  # ok | failed | disabled
    error: BaseException | None = None

    @property
    def reason(self) -> str:
        """A one-line description of the failure, or ``""``."""
        if self.error is None:
            return ""
        return f"{type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class Entry:
    """A record together with the plugin that provided it."""

    spec: PluginSpec
    plugin: PluginInfo = field(compare=False)

    @property
    def provider(self) -> str:
        """``"distribution version"`` of the provider, for messages."""
        return f"{self.plugin.distribution} {self.plugin.version}"


class _Hooks:
    """Typed facade over the plugin manager: one method per hook, so mypy checks callers.

    Each implementation is called on its own so that one plugin's failure is attributed to it
    and does not hide the others' records.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm

    def _collect(self, hook_name: str, record_type: type[PluginSpec]) -> list[tuple[str, PluginSpec]]:
        caller = getattr(self._pm.hook, hook_name)
        found: list[tuple[str, PluginSpec]] = []
        for impl in caller.get_hookimpls():
            plugin_name = impl.plugin_name
            try:
                records = list(impl.function() or ())
                for record in records:
                    if not isinstance(record, record_type):
                        raise TypeError(
                            f"{hook_name}() returned {type(record).__name__}; expected "
                            f"{record_type.__name__} records"
                        )
            except Exception as exc:
                _record_failure(self._pm, plugin_name, exc)
                continue
            found.extend((plugin_name, record) for record in records)
        return found

    def transports(self) -> list[tuple[str, PluginSpec]]:
        return self._collect("eventforge_transports", TransportSpec)

    def serializers(self) -> list[tuple[str, PluginSpec]]:
        return self._collect("eventforge_serializers", SerializerSpec)

    def dispatchers(self) -> list[tuple[str, PluginSpec]]:
        return self._collect("eventforge_dispatchers", DispatcherSpec)

    def observers(self) -> list[tuple[str, PluginSpec]]:
        return self._collect("eventforge_observers", ObserverSpec)

    def configure(self, config: dict[str, Any]) -> None:
        self._pm.hook.eventforge_configure.call_historic(kwargs={"config": config})


_infos: dict[int, dict[str, PluginInfo]] = {}


def _record_failure(pm: pluggy.PluginManager, plugin_name: str, exc: BaseException) -> None:
    info = _infos.setdefault(id(pm), {}).get(plugin_name)
    if info is None:
        info = PluginInfo(plugin_name, "?", "?")
        _infos[id(pm)][plugin_name] = info
    info.status = "failed"
    info.error = exc
    _warn_failure(info)


def _warn_failure(info: PluginInfo) -> None:
    message = (
        f"eventforge plugin {info.name!r} ({info.distribution} {info.version}) failed to load "
        f"and is skipped: {info.reason}. Run `eventforge plugins` for details."
    )
    if _env_flag("EVENTFORGE_STRICT_PLUGINS"):
        raise PluginImportError(
            message.replace("and is skipped", "(EVENTFORGE_STRICT_PLUGINS=1)"),
            plugin=info.name,
            distribution=info.distribution,
        ) from info.error
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _core_version() -> str:
    try:
        return metadata.version(CORE_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _entry_points() -> list[Any]:
    seen: set[tuple[str, str]] = set()
    eps = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            eps.append(ep)
    return sorted(eps, key=lambda ep: ep.name)


@functools.lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """Build (once) the plugin manager with the built-ins and every installed entry point."""
    import pluggy

    hookspecs = importlib.import_module("eventforge.hookspecs")
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos = _infos.setdefault(id(pm), {})
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        infos[module_name] = PluginInfo(module_name, CORE_DISTRIBUTION, _core_version())
    disabled = _env_list("EVENTFORGE_DISABLE_PLUGINS")
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        info = infos[ep.name] = PluginInfo(ep.name, dist_name, version)
        if ep.name in disabled or dist_name in disabled:
            info.status = "disabled"
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:
            info.status = "failed"
            info.error = exc
            _warn_failure(info)
    return pm


class Registry:
    """A read-only view of every plugin record, indexed by kind and name, alias or scheme."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self.hooks = _Hooks(pm)
        self._entries: dict[str, list[Entry]] = {kind: [] for kind in KINDS}
        self._names: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in KINDS}
        self._schemes: dict[str, list[Entry]] = {}
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        collected = {
            "transport": self.hooks.transports(),
            "serializer": self.hooks.serializers(),
            "dispatcher": self.hooks.dispatchers(),
            "observer": self.hooks.observers(),
        }
        infos = _infos.get(id(pm), {})
        for kind, pairs in collected.items():
            for plugin_name, spec in pairs:
                info = infos.get(plugin_name) or PluginInfo(plugin_name, "?", "?")
                entry = Entry(spec, info)
                self._entries[kind].append(entry)
                for key in (spec.name, *spec.aliases):
                    self._names[kind].setdefault(key, []).append(entry)
                if isinstance(spec, TransportSpec):
                    for scheme in spec.schemes:
                        self._schemes.setdefault(scheme, []).append(entry)
        if _env_flag("EVENTFORGE_STRICT_PLUGINS"):
            for kind in KINDS:
                for key, entries in self._names[kind].items():
                    self._check_conflict(kind, key, entries)

    # -- listing ---------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin that was found, including failed and disabled ones."""
        return list(_infos.get(id(self._pm), {}).values())

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Every record (of one kind, or all), in registration order."""
        kinds = KINDS if kind is None else (kind,)
        return [e for k in kinds for e in self._entries[k]]

    def names(self, kind: str) -> list[str]:
        """The primary names of one kind."""
        return [e.spec.name for e in self._entries[kind]]

    # -- resolution ------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> Entry:
        """Return the record that ``name`` (or an alias) selects, or raise a teaching error."""
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; choose one of: {', '.join(KINDS)}")
        entries = self._names[kind].get(name)
        if entries:
            self._check_conflict(kind, name, entries)
            return entries[0]
        raise self._not_found(kind, name)

    def transport(self, name_or_url: str) -> Entry:
        """Resolve a transport by name, alias or URL (``redis://host:6379/0``)."""
        if "://" in name_or_url:
            scheme = name_or_url.split("://", 1)[0].lower()
            entries = self._schemes.get(scheme)
            if entries:
                self._check_conflict("transport", scheme, entries)
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
                module = importlib.import_module(entry.spec.module)
                target = getattr(module, entry.spec.attribute)
            except Exception as exc:
                missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
                hint = ""
                if missing and missing.split(".")[0] in entry.spec.requires:
                    hint = f" It needs {missing!r}: reinstall {entry.plugin.distribution}, or pip install {missing}."
                raise PluginImportError(
                    f"{entry.spec.kind} {entry.spec.name!r} from {entry.provider} could not be "
                    f"loaded ({entry.spec.target}): {type(exc).__name__}: {exc}.{hint}",
                    plugin=entry.spec.name,
                    distribution=entry.plugin.distribution,
                ) from exc
            self._loaded[key] = target
            return target

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

    def configure(self, config: dict[str, Any]) -> None:
        """Pass validated settings to every plugin's ``eventforge_configure`` (historic)."""
        self.hooks.configure(config)

    # -- errors ----------------------------------------------------------------------------

    def _check_conflict(self, kind: str, name: str, entries: Sequence[Entry]) -> None:
        providers = sorted({e.plugin.distribution for e in entries} | {e.provider for e in entries})
        distinct = {(e.plugin.name, e.spec.name) for e in entries}
        if len(distinct) > 1:
            names = sorted({e.provider for e in entries})
            plugin_names = sorted({e.plugin.name for e in entries})
            raise PluginConflictError(
                f"{kind} {name!r} is claimed by more than one plugin: {' and '.join(names)}. "
                f"Uninstall one, or disable one with EVENTFORGE_DISABLE_PLUGINS="
                f"{plugin_names[-1]}.",
                kind=kind,
                name=name,
                providers=providers,
            )

    def _not_found(self, kind: str, name: str, *, url: bool = False) -> Exception:
        for info in self.plugins():
            if info.status == "failed" and name in (info.name, info.distribution.removeprefix("eventforge-")):
                error = PluginImportError(
                    f"{kind} {name!r} comes from {info.distribution} {info.version}, which failed "
                    f"to load: {info.reason}. Fix or reinstall it; `eventforge plugins` shows "
                    "every plugin's status.",
                    plugin=info.name,
                    distribution=info.distribution,
                )
                error.__cause__ = info.error
                return error
        if url:
            keys = sorted(self._schemes)
            label = f"URL scheme '{name}://'"
        else:
            keys = sorted(self._names[kind])
            label = f"{kind} '{name}'"
        installed = self.names(kind)
        known_names = [n for (k, n) in KNOWN_DISTRIBUTIONS if k == kind]
        suggestions = difflib.get_close_matches(
            name, list(dict.fromkeys([*keys, *known_names])), n=3, cutoff=0.6
        )
        parts = [f"Unknown {label}."]
        if suggestions:
            parts.append("Did you mean " + " or ".join(f"'{s}'" for s in suggestions) + "?")
        parts.append(f"Installed: {', '.join(installed) if installed else '(none)'}.")
        known = sorted(
            {
                (n, dist)
                for (k, n), dist in KNOWN_DISTRIBUTIONS.items()
                if k == kind and n not in self._names[kind] and n not in self._schemes
                and n not in ("tcps", "rediss")
            }
        )
        hint = None
        for n, dist in known:
            if n == name:
                hint = f"pip install {dist}"
        if known:
            parts.append(
                "Known but not installed: "
                + ", ".join(f"{n} (pip install {dist})" for n, dist in known)
                + "."
            )
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


def registry() -> Registry:
    """Return the process-wide registry, building it on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry(get_plugin_manager())
    return _registry


def reset_registry() -> None:
    """Forget discovery results so the next :func:`registry` call rediscovers (for tests)."""
    global _registry
    with _registry_lock:
        _registry = None
        _infos.clear()
        get_plugin_manager.cache_clear()


def plugin_exports(kind: str, name: str, attribute: str, *, module: str) -> Any:
    """Resolve ``attribute`` of the seed import path ``module`` through the registry.

    Used by ``eventforge.transports.<name>``: the installed plugin's target module provides the
    names. Raises ``AttributeError`` for dunder lookups and an ``ImportError`` naming the
    distribution to install when the plugin is absent.
    """
    if attribute.startswith("__"):
        raise AttributeError(attribute)
    dist = KNOWN_DISTRIBUTIONS.get((kind, name), f"eventforge-{name}")
    try:
        entry = registry().get(kind, name)
    except PluginNotFoundError:
        raise ImportError(
            f"cannot import {attribute!r} from {module!r}: the {name} {kind} is not installed. "
            f"Install it with: pip install {dist}  (or pip install 'eventforge-core[{name}]')",
            name=module,
        ) from None
    target_module = _import_target_module(entry)
    if attribute in entry.spec.exports or hasattr(target_module, attribute):
        return getattr(target_module, attribute)
    raise AttributeError(f"module {module!r} has no attribute {attribute!r}")


def _import_target_module(entry: Entry) -> ModuleType:
    registry().load(entry)
    return sys.modules[entry.spec.module]


def find_export(attribute: str) -> Any:
    """Find a top-level ``eventforge.<attribute>`` export among the installed observers."""
    reg = registry()
    for entry in reg.entries("observer"):
        if attribute in entry.spec.exports:
            module = _import_target_module(entry)
            return getattr(module, attribute)
    dist = KNOWN_EXPORTS.get(attribute)
    if dist is None:
        raise AttributeError(f"module 'eventforge' has no attribute {attribute!r}")
    raise ImportError(
        f"cannot import {attribute!r} from 'eventforge': it is provided by {dist}, which is not "
        f"installed. Install it with: pip install {dist}  (or pip install 'eventforge-core[observers]')",
        name="eventforge",
    )


def iter_installed(kind: str) -> Iterable[str]:
    """The names of one kind, for completion and messages."""
    return registry().names(kind)


def load_named(kind: str, name: str) -> Any:
    """Resolve and load a plugin by kind and name in one step."""
    reg = registry()
    return reg.load(reg.get(kind, name))


