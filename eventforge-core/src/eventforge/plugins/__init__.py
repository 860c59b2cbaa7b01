"""Plugin records, discovery and the registry that resolves names (layer 2)."""

from __future__ import annotations

from eventforge.plugins._exports import find_export as find_export
from eventforge.plugins._exports import plugin_exports as plugin_exports
from eventforge.plugins._hints import KNOWN_DISTRIBUTIONS as KNOWN_DISTRIBUTIONS
from eventforge.plugins._hints import SCHEME_ONLY as SCHEME_ONLY
from eventforge.plugins._records import (
    DispatcherSpec as DispatcherSpec,
)
from eventforge.plugins._records import (
    MiddlewareSpec as MiddlewareSpec,
)
from eventforge.plugins._records import (
    ObserverSpec as ObserverSpec,
)
from eventforge.plugins._records import (
    PluginSpec as PluginSpec,
)
from eventforge.plugins._records import (
    SerializerSpec as SerializerSpec,
)
from eventforge.plugins._records import (
    TransportSpec as TransportSpec,
)
from eventforge.plugins._registry import KINDS as KINDS
from eventforge.plugins._registry import Registry as Registry
from eventforge.plugins._registry import load_named as load_named
from eventforge.plugins._registry import registry as registry
from eventforge.plugins._registry import reset_registry as reset_registry

__all__ = [
    "KINDS",
    "KNOWN_DISTRIBUTIONS",
    "SCHEME_ONLY",
    "DispatcherSpec",
    "MiddlewareSpec",
    "ObserverSpec",
    "PluginSpec",
    "Registry",
    "SerializerSpec",
    "TransportSpec",
    "find_export",
    "load_named",
    "plugin_exports",
    "registry",
    "reset_registry",
]
