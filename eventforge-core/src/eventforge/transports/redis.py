"""Seed import path for the ``redis`` transport plugin (distribution ``eventforge-redis``)."""

from __future__ import annotations

from typing import Any

from eventforge.plugins import plugin_exports


def __getattr__(name: str) -> Any:
    return plugin_exports("transport", "redis", name, module=__name__)
