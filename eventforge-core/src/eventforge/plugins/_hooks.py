"""The typed facade over the plugin manager's hooks: the core never calls ``pm.hook.*``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

__all__ = ["Hooks"]


class Hooks:
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
