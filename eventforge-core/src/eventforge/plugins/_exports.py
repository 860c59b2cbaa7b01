"""Names that plugins export under eventforge's own import paths, resolved through the registry.

``eventforge.transports.<name>`` and the top-level ``eventforge.<Meter>`` names are provided by
whichever installed plugin registers them; an absent plugin is an ``ImportError`` that names the
distribution to install.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from eventforge.errors import PluginImportError, PluginNotFoundError
from eventforge.plugins._discovery import DISABLE_ENV
from eventforge.plugins._hints import KNOWN_EXPORTS
from eventforge.plugins._registry import Entry, Registry, registry

__all__ = ["find_export", "plugin_exports"]


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


def _import_target_module(reg: Registry, entry: Entry) -> ModuleType:
    reg.load(entry)
    return sys.modules[entry.spec.module]
