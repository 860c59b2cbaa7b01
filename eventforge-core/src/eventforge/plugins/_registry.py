"""The plugin registry: names -> records -> loaded objects.

Discovery (:mod:`eventforge.plugins._discovery`) happens once, lazily, never at ``import eventforge``.
The registry then collects every plugin's frozen records through a typed facade over the hooks,
one plugin at a time, and indexes them by kind and name, alias or URL scheme. Only a selected
record's target is ever imported. Errors say what was asked, what exists and what to install.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eventforge.errors import PluginConflictError, PluginImportError
from eventforge.plugins._discovery import (
    STRICT_ENV,
    Discovery,
    PluginInfo,
    discover,
    env_flag,
    prefer_builtins,
    record_failure,
    warn_or_raise,
)
from eventforge.plugins._hints import (
    absence,
    conflict_error,
    find_distribution,
    install_hint,
    missing_requirements,
    not_found_error,
)
from eventforge.plugins._hooks import Hooks
from eventforge.plugins._records import PluginSpec, TransportSpec

__all__ = [
    "KINDS",
    "Entry",
    "PluginInfo",
    "Registry",
    "load_named",
    "registry",
    "reset_registry",
]

KINDS = ("transport", "serializer", "dispatcher", "observer", "middleware")


@dataclass(frozen=True)
class Entry:
    """A record together with the plugin that provided it."""

    spec: PluginSpec
    plugin: PluginInfo

    @property
    def provider(self) -> str:
        """``"distribution version"`` of the provider, for messages."""
        return self.plugin.provider


class Registry:
    """A read-only view of every plugin record, indexed by kind and name, alias or scheme."""

    def __init__(self, discovery: Discovery) -> None:
        self._pm = discovery.pm
        self._infos = discovery.infos
        self.hooks = Hooks(self._pm)
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
        return missing_requirements(entry.spec)

    def install_hint(self, entry: Entry, missing: Sequence[str] = ()) -> str:
        """The ``pip install`` command that provides ``entry``'s missing requirements.

        A record with an ``extra`` names its distribution's extra
        (``pip install 'eventforge-observers[logfire]'``); otherwise the missing modules.
        """
        return install_hint(entry.spec, entry.plugin.distribution, missing)

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
        return find_distribution(self._infos.values(), name)

    def absence(self, kind: str, name: str) -> str:
        """Why the well-known ``name`` is not available, and what to do about it."""
        return absence(self._infos.values(), kind, name)

    # -- errors ----------------------------------------------------------------------------

    @staticmethod
    def _check_kind(kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; choose one of: {', '.join(KINDS)}")
        return kind

    @staticmethod
    def _conflict(kind: str, label: str, entries: Sequence[Entry]) -> PluginConflictError | None:
        return conflict_error(kind, label, (e.plugin for e in entries))

    def _raise_conflict(self, kind: str, label: str, entries: Sequence[Entry]) -> None:
        error = self._conflict(kind, label, entries)
        if error is not None:
            raise error

    def _not_found(self, kind: str, name: str, *, url: bool = False) -> Exception:
        return not_found_error(
            kind,
            name,
            url=url,
            infos=self._infos.values(),
            names=self._names[kind],
            primary_names=self.names(kind),
            schemes=self._schemes,
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


def iter_installed(kind: str) -> Iterable[str]:
    """The names of one kind, for completion and messages."""
    return registry().names(kind)


def load_named(kind: str, name: str) -> Any:
    """Resolve and load a plugin by kind and name in one step."""
    reg = registry()
    return reg.load(reg.get(kind, name))
