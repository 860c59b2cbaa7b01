"""What to tell the user when a plugin name does not resolve: what exists, what to install.

The well-known names that live in distributions of their own, and the errors that teach: an
unknown name (with a did-you-mean and the ``pip install`` that provides it), a name two plugins
claim, a plugin that failed to load or is disabled.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Collection, Iterable, Sequence

from eventforge.errors import PluginConflictError, PluginImportError, PluginNotFoundError
from eventforge.plugins._discovery import DISABLE_ENV, PluginInfo
from eventforge.plugins._records import PluginSpec

__all__ = [
    "KNOWN_DISTRIBUTIONS",
    "KNOWN_EXPORTS",
    "SCHEME_ONLY",
    "absence",
    "conflict_error",
    "find_distribution",
    "install_hint",
    "missing_requirements",
    "not_found_error",
]

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
# Top-level ``eventforge.<name>`` exports that a plugin distribution provides.
KNOWN_EXPORTS: dict[str, str] = {
    "Meter": "eventforge-observers",
    "TimingMeter": "eventforge-observers",
    "MemoryMeter": "eventforge-observers",
    "CPUMeter": "eventforge-observers",
    "MetricsMeter": "eventforge-observers",
    "LoggingReporter": "eventforge-observers",
}


def missing_requirements(spec: PluginSpec) -> list[str]:
    """Modules of ``spec.requires`` that are not installed (checked, not imported)."""
    missing = []
    for module in spec.requires:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    return missing


def install_hint(spec: PluginSpec, distribution: str, missing: Sequence[str] = ()) -> str:
    """The ``pip install`` command that provides ``spec``'s missing requirements.

    A record with an ``extra`` names its distribution's extra
    (``pip install 'eventforge-observers[logfire]'``); otherwise the missing modules.
    """
    if spec.extra:
        return f"pip install '{distribution}[{spec.extra}]'"
    modules = list(missing) or missing_requirements(spec)
    return f"pip install {' '.join(modules)}"


def find_distribution(infos: Iterable[PluginInfo], name: str) -> PluginInfo | None:
    """The first plugin provided by distribution ``name`` (any status), or ``None``."""
    wanted = name.lower().replace("_", "-")
    for info in infos:
        if info.distribution.lower().replace("_", "-") == wanted:
            return info
    return None


def absence(infos: Iterable[PluginInfo], kind: str, name: str) -> str:
    """Why the well-known ``name`` is not available, and what to do about it."""
    dist = KNOWN_DISTRIBUTIONS.get((kind, name), f"eventforge-{name}")
    info = find_distribution(infos, dist)
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


def conflict_error(
    kind: str, label: str, claimants: Iterable[PluginInfo]
) -> PluginConflictError | None:
    """The error for ``label`` claimed by more than one plugin, or ``None`` if only one does."""
    plugins = {p.name: p for p in claimants}
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


def _failed_provider(infos: Iterable[PluginInfo], kind: str, name: str) -> PluginInfo | None:
    dist = KNOWN_DISTRIBUTIONS.get((kind, name))
    for info in infos:
        if info.status != "failed":
            continue
        if name in (info.name, info.distribution.removeprefix("eventforge-")) or (
            dist is not None and info.distribution == dist
        ):
            return info
    return None


def not_found_error(
    kind: str,
    name: str,
    *,
    url: bool,
    infos: Collection[PluginInfo],
    names: Collection[str],
    primary_names: Collection[str],
    schemes: Collection[str],
) -> Exception:
    """The error for a ``kind`` ``name`` (a URL scheme if ``url``) that nothing registers.

    ``names`` are the names and aliases registered for ``kind``, ``primary_names`` the names
    alone, ``schemes`` the transport URL schemes: the error lists them and suggests the closest.
    """
    failed = _failed_provider(infos, kind, name)
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
    installed = sorted(schemes if url else primary_names)
    dist = KNOWN_DISTRIBUTIONS.get((kind, name))
    if dist is not None and find_distribution(infos, dist) is None:
        extra = dist.removeprefix("eventforge-")
        return PluginNotFoundError(
            f"{name} is provided by {dist}: pip install {dist}  (or pip install "
            f"'eventforge-core[{extra}]'). It is not installed here; `eventforge plugins` "
            "lists what is.",
            kind=kind,
            name=name,
            installed=installed,
            suggestions=[],
            install_hint=f"pip install {dist}",
        )
    disabled = [
        info
        for info in infos
        if info.status == "disabled"
        and (kind, name) not in KNOWN_DISTRIBUTIONS
        and name in (info.name, info.distribution.removeprefix("eventforge-"))
    ]
    candidates = list(schemes if url else names)
    known = sorted(
        (n, dist)
        for (k, n), dist in KNOWN_DISTRIBUTIONS.items()
        if k == kind and n not in names and (kind != "transport" or n not in schemes)
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
    absent = [
        (n, d) for n, d in known if n not in SCHEME_ONLY and find_distribution(infos, d) is None
    ]
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
        reason = absence(infos, kind, name)
        hint = reason
        if find_distribution(infos, KNOWN_DISTRIBUTIONS[(kind, name)]) is not None:
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
