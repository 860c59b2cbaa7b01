"""Finding plugins: the built-ins and every ``eventforge`` entry point, each loaded in isolation.

Discovery runs once per :func:`eventforge.plugins._registry.registry` (never at ``import eventforge``).
Each entry point is loaded on its own: one that fails to import, names an unknown hook, or
reuses another distribution's entry-point name is recorded as failed (with its distribution,
version and the original error), warned about once, and never breaks the others. With
``EVENTFORGE_STRICT_PLUGINS=1`` such a failure raises instead.

An entry point names a small hook module (``eventforge_redis.plugin``). When that module's
package has not been imported yet, discovery executes the hook module's file on its own, so the
package's ``__init__`` (and whatever driver it imports) stays unloaded until the plugin is
actually selected. Hook modules should therefore import only ``eventforge`` and the standard
library, with absolute imports; a module that cannot run detached is imported normally.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from eventforge.errors import PluginConflictError, PluginImportError

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "BUILTIN_PLUGINS",
    "CORE_DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "Discovery",
    "PluginInfo",
    "discover",
    "env_flag",
    "env_list",
    "prefer_builtins",
    "warn_or_raise",
]

ENTRY_POINT_GROUP = "eventforge"
BUILTIN_PLUGINS = ("eventforge.plugins._builtins",)
CORE_DISTRIBUTION = "eventforge-core"
STRICT_ENV = "EVENTFORGE_STRICT_PLUGINS"
DISABLE_ENV = "EVENTFORGE_DISABLE_PLUGINS"


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str) -> frozenset[str]:
    """The comma-separated, non-empty items of the environment variable ``name``."""
    return frozenset(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())


@dataclass(frozen=True)
class PluginInfo:
    """One plugin (an entry point, or a built-in module) and how loading it went.

    ``status`` is ``"ok"``, ``"failed"`` (``error`` holds the original exception) or
    ``"disabled"`` (named in ``EVENTFORGE_DISABLE_PLUGINS``).
    """

    name: str
    distribution: str
    version: str
    status: str = "ok"
    error: BaseException | None = field(default=None, compare=False)

    @property
    def provider(self) -> str:
        """``"distribution version"``, for messages."""
        return f"{self.distribution} {self.version}"

    @property
    def reason(self) -> str:
        """A one-line description of the failure, or ``""``."""
        if self.error is None:
            return ""
        return f"{type(self.error).__name__}: {self.error}"


@dataclass
class Discovery:
    """The plugin manager and what was found, in discovery order."""

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo]


def warn_or_raise(message: str, error: BaseException, *, plugin: str, distribution: str) -> None:
    """Report a discovery problem once: a warning, or with strict plugins an exception."""
    if env_flag(STRICT_ENV):
        if isinstance(error, PluginConflictError):
            raise error
        raise PluginImportError(
            f"{message} ({STRICT_ENV}=1 turns this into an error)",
            plugin=plugin,
            distribution=distribution,
        ) from error
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _failure_message(info: PluginInfo) -> str:
    return (
        f"eventforge plugin {info.name!r} ({info.provider}) failed to load and is skipped: "
        f"{info.reason}. Run `eventforge plugins` for details."
    )


def record_failure(infos: dict[str, PluginInfo], name: str, error: BaseException) -> None:
    """Mark plugin ``name`` as failed with ``error`` and report it."""
    old = infos.get(name) or PluginInfo(name, "?", "?")
    info = infos[name] = PluginInfo(old.name, old.distribution, old.version, "failed", error)
    warn_or_raise(_failure_message(info), error, plugin=name, distribution=info.distribution)


def _core_version() -> str:
    try:
        return metadata.version(CORE_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _entry_points(search_path: Sequence[str] | None) -> Iterator[tuple[Any, str, str]]:
    """Yield ``(entry point, distribution, version)`` for the group, sorted by name."""
    if search_path is None:
        dists = metadata.distributions()
    else:
        dists = metadata.distributions(path=list(search_path))
    found: dict[tuple[str, str], tuple[Any, str, str]] = {}
    for dist in dists:
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                # The first copy on the path wins, as it does for imports.
                found.setdefault((dist_name.lower(), ep.name), (ep, dist_name, dist.version))
    yield from sorted(found.values(), key=lambda item: (item[0].name, item[1]))


def _load_detached(module_name: str, plugin_name: str) -> ModuleType | None:
    """Execute a package's hook module without importing the package; ``None`` if impossible."""
    parts = module_name.split(".")
    if len(parts) < 2 or parts[0] in sys.modules:
        return None
    try:
        top = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    locations = top.submodule_search_locations if top is not None else None
    spec = None
    for part in parts[1:]:
        if locations is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(part, list(locations))
        if spec is None:
            return None
        locations = spec.submodule_search_locations
    if spec is None or locations is not None or not (spec.origin or "").endswith(".py"):
        return None
    detached_name = f"_eventforge_hooks_{plugin_name}"
    detached = importlib.util.spec_from_file_location(detached_name, spec.origin)
    if detached is None or detached.loader is None:
        return None
    module = importlib.util.module_from_spec(detached)
    sys.modules[detached_name] = module
    try:
        detached.loader.exec_module(module)
    except ImportError:
        del sys.modules[detached_name]
        return None
    except BaseException:
        del sys.modules[detached_name]
        raise
    return module


def _load_hooks(ep: Any) -> ModuleType:
    module_name, _, attr = ep.value.partition(":")
    module_name = module_name.strip()
    if attr.strip():
        raise TypeError(
            f"entry point {ep.name!r} = {ep.value!r} names {attr.strip()!r} inside a module; an "
            "eventforge entry point must name a module (the one that defines the eventforge_* "
            f'hook functions): write {ep.name} = "{module_name}"'
        )
    return _load_detached(module_name, ep.name) or importlib.import_module(module_name)


E = TypeVar("E")


def prefer_builtins(
    index: dict[str, list[E]], info_of: Callable[[E], PluginInfo], what: str
) -> None:
    """Where a plugin claims a key the built-ins own, keep only the built-in, with a warning.

    A third-party ``memory`` transport would otherwise make ``connect("memory://")`` fail in
    every process that has it installed; the built-in wins and the claim is reported (never
    raised, even with strict plugins: the process works as it would without the plugin).
    """
    for key, entries in index.items():
        builtin = [e for e in entries if info_of(e).name in BUILTIN_PLUGINS]
        others = [info_of(e) for e in entries if info_of(e).name not in BUILTIN_PLUGINS]
        if builtin and others:
            index[key] = builtin
            for info in {i.name: i for i in others}.values():
                warnings.warn(
                    f"eventforge plugin {info.name!r} from {info.provider} claims {what} "
                    f"{key!r}, which eventforge-core provides built in: the built-in is used "
                    f"and the plugin's claim is ignored. Ask {info.distribution}'s authors to "
                    "choose another name",
                    RuntimeWarning,
                    stacklevel=3,
                )


def _check_hook_names(plugin: object, hookspecs: ModuleType) -> None:
    """Refuse ``eventforge_*`` functions that match no hook (a typo would register nothing)."""
    known = [n for n in vars(hookspecs) if n.startswith("eventforge_")]
    for attr in dir(plugin):
        if attr.startswith("eventforge_") and attr not in known:
            close = difflib.get_close_matches(attr, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{attr}() is not an eventforge hook{hint} Hooks: {', '.join(known)}")


def discover(search_path: Sequence[str] | None = None) -> Discovery:
    """Build a plugin manager with the built-ins and every ``eventforge`` entry point.

    ``search_path`` restricts where distributions are looked for (default: ``sys.path``).
    """
    import pluggy

    hookspecs = importlib.import_module("eventforge.plugins.hookspecs")
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        infos[module_name] = PluginInfo(module_name, CORE_DISTRIBUTION, _core_version())
    disabled = env_list(DISABLE_ENV)
    for ep, dist_name, version in _entry_points(search_path):
        name = ep.name
        if name in infos:
            other = infos[name]
            name = f"{ep.name}@{dist_name}"
            infos[name] = PluginInfo(name, dist_name, version)
            record_failure(
                infos,
                name,
                PluginConflictError(
                    f"entry point {ep.name!r} is provided by both {other.provider} and "
                    f"{dist_name} {version}; uninstall one of them",
                    kind="plugin",
                    name=ep.name,
                    providers=sorted({other.provider, f"{dist_name} {version}"}),
                ),
            )
            continue
        if ep.name in disabled or dist_name in disabled:
            infos[name] = PluginInfo(name, dist_name, version, "disabled")
            continue
        infos[name] = PluginInfo(name, dist_name, version)
        try:
            plugin = _load_hooks(ep)
            _check_hook_names(plugin, hookspecs)
            pm.register(plugin, name=name)
        except Exception as exc:
            record_failure(infos, name, exc)
    return Discovery(pm, infos)
