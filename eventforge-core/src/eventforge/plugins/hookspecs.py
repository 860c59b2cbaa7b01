"""The hooks through which plugins register with eventforge.

Every hook describes or configures; none is called per message. Registration hooks return
frozen records (:mod:`eventforge.plugins`) that name a ``"module:attr"`` target, so listing
plugins never imports a plugin's heavy dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

from eventforge.plugins._records import (
    DispatcherSpec,
    MiddlewareSpec,
    ObserverSpec,
    SerializerSpec,
    TransportSpec,
)

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "eventforge"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def eventforge_transports() -> Sequence[TransportSpec]:
    """Called once when the registry is built; return the transports this plugin provides."""
    raise AssertionError("hookspec")  # pragma: no cover


@hookspec
def eventforge_serializers() -> Sequence[SerializerSpec]:
    """Called once when the registry is built; return the serializers this plugin provides."""
    raise AssertionError("hookspec")  # pragma: no cover


@hookspec
def eventforge_dispatchers() -> Sequence[DispatcherSpec]:
    """Called once when the registry is built; return the dispatchers this plugin provides."""
    raise AssertionError("hookspec")  # pragma: no cover


@hookspec
def eventforge_observers() -> Sequence[ObserverSpec]:
    """Called once when the registry is built; return the observers this plugin provides."""
    raise AssertionError("hookspec")  # pragma: no cover


@hookspec
def eventforge_middleware() -> Sequence[MiddlewareSpec]:
    """Called once when the registry is built; return the middleware this plugin provides."""
    raise AssertionError("hookspec")  # pragma: no cover


@hookspec(historic=True)
def eventforge_configure(config: Mapping[str, Any]) -> None:
    """Called with the validated settings each time :func:`eventforge.configure` runs.

    Historic: a plugin registered later still receives every earlier configuration.
    """
