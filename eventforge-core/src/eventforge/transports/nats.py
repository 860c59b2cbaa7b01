"""Seed import path for the ``nats`` transport plugin (distribution ``eventforge-nats``)."""

from __future__ import annotations

from typing import Any

from eventforge.plugins import plugin_exports


def __getattr__(name: str) -> Any:
    return plugin_exports("transport", "nats", name, module=__name__)
