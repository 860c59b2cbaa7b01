"""Records that plugins return from the registration hooks.

A record names what a plugin provides without importing it: the ``target`` is a
``"module:attr"`` string imported only when the plugin is selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DispatcherSpec",
    "ObserverSpec",
    "PluginSpec",
    "SerializerSpec",
    "TransportSpec",
]


@dataclass(frozen=True)
class PluginSpec:
    """What every plugin record has.

    ``name`` is what users select; ``aliases`` are other names that resolve to it; ``target``
    is ``"module:attr"``; ``requires`` lists the modules the target imports (checked, never
    imported, by ``eventforge plugins``); ``exports`` lists names that the seed import paths
    (``eventforge.transports.<name>``, ``from eventforge import ...``) re-export from the
    target's module.
    """

    name: str
    target: str
    summary: str = ""
    aliases: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()

    kind = "plugin"

    def __post_init__(self) -> None:
        if ":" not in self.target:
            raise ValueError(
                f"{self.kind} {self.name!r}: target {self.target!r} must be 'module:attribute'"
            )

    @property
    def module(self) -> str:
        """The module part of ``target``."""
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        """The attribute part of ``target``."""
        return self.target.partition(":")[2]


@dataclass(frozen=True)
class TransportSpec(PluginSpec):
    """A transport. The target is a class (or factory); with a URL it is called as
    ``target.from_url(url, **options)`` when that exists, else ``target(**options)``."""

    schemes: tuple[str, ...] = ()
    capabilities: frozenset[str] = field(default_factory=frozenset)

    kind = "transport"


@dataclass(frozen=True)
class SerializerSpec(PluginSpec):
    """A serializer. ``trusted_only`` serializers are refused on receive unless trusted."""

    content_type: str = "application/json"
    trusted_only: bool = False

    kind = "serializer"


@dataclass(frozen=True)
class DispatcherSpec(PluginSpec):
    """A dispatcher: chooses which handler(s) of a group or pool receive a message."""

    kind = "dispatcher"


@dataclass(frozen=True)
class ObserverSpec(PluginSpec):
    """An observer (meter, reporter, tracer) usable with ``@task(on_execute=...)``."""

    kind = "observer"
