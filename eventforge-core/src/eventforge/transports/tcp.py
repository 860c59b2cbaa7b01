"""Seed import path for the ``tcp`` transport plugin (distribution ``eventforge-tcp``)."""

from __future__ import annotations

from typing import Any

from eventforge.plugins import plugin_exports


def __getattr__(name: str) -> Any:
    return plugin_exports("transport", "tcp", name, module=__name__)
