"""Records that plugins return from the registration hooks.

A record names what a plugin provides without importing it: the ``target`` is a
``"module:attr"`` string imported only when the plugin is selected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from eventforge.transport import Capability

__all__ = [
    "DispatcherSpec",
    "MiddlewareSpec",
    "ObserverSpec",
    "PluginSpec",
    "SerializerSpec",
    "TransportSpec",
]

_NAME = re.compile(r"[a-z][a-z0-9_.+-]*")
_EXTRA = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def _strings(spec: PluginSpec, field_name: str, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(
            f"{spec.kind} {spec.name!r}: {field_name} must be a sequence of strings, got {value!r}"
        )
    return tuple(value)


@dataclass(frozen=True)
class PluginSpec:
    """What every plugin record has.

    ``name`` is what users select; ``aliases`` are other names that resolve to it; ``target``
    is ``"module:attr"``; ``requires`` lists the modules the target imports (checked, never
    imported, by ``eventforge plugins``); ``exports`` lists names that the seed import paths
    (``eventforge.transports.<name>``, ``from eventforge import ...``) re-export from the
    target's module. ``extra`` names the providing distribution's optional-dependency extra
    that installs ``requires`` (``"logfire"`` -> ``pip install 'eventforge-observers[logfire]'``);
    without it, install hints name the missing modules themselves.
    """

    name: str
    target: str
    summary: str = ""
    aliases: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()
    extra: str | None = None

    kind = "plugin"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"{self.kind} name {self.name!r} is not valid: use lower-case letters, digits, "
                "'-', '_' or '.', starting with a letter"
            )
        module, _, attribute = str(self.target).partition(":")
        if not module or not attribute:
            raise ValueError(
                f"{self.kind} {self.name!r}: target {self.target!r} must be 'module:attribute'"
            )
        # Freeze the sequences a plugin may have passed as lists, so a record never changes.
        for name in ("aliases", "requires", "exports"):
            object.__setattr__(self, name, _strings(self, name, getattr(self, name)))
        for alias in self.aliases:
            if not _NAME.fullmatch(alias):
                raise ValueError(f"{self.kind} {self.name!r}: alias {alias!r} is not a valid name")
        if self.extra is not None and (
            not isinstance(self.extra, str) or not _EXTRA.fullmatch(self.extra)
        ):
            raise ValueError(
                f"{self.kind} {self.name!r}: extra {self.extra!r} is not a valid extra name "
                "(letters, digits, '-', '_' or '.')"
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

    def __post_init__(self) -> None:
        super().__post_init__()
        schemes = tuple(s.lower() for s in _strings(self, "schemes", self.schemes))
        object.__setattr__(self, "schemes", schemes)
        capabilities = frozenset(_strings(self, "capabilities", self.capabilities))
        unknown = sorted(capabilities - Capability.ALL)
        if unknown:
            raise ValueError(
                f"transport {self.name!r} declares unknown capabilities {unknown}; "
                f"known: {', '.join(sorted(Capability.ALL))}"
            )
        object.__setattr__(self, "capabilities", capabilities)


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


@dataclass(frozen=True)
class MiddlewareSpec(PluginSpec):
    """A middleware selectable by name in ``MessageQueue(middleware=[...])``. The target is a
    class or a zero-argument factory (called once per queue) or an instance."""

    kind = "middleware"
