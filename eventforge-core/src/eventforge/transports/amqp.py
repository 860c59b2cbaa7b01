"""Import path for the ``amqp`` transport plugin (distribution ``eventforge-amqp``)."""

from __future__ import annotations

from typing import Any

from eventforge.plugins import plugin_exports


def __getattr__(name: str) -> Any:
    return plugin_exports("transport", "amqp", name, module=__name__)
