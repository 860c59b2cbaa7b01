"""Hook implementations of eventforge-nats (nothing registered until the feature lands)."""

from __future__ import annotations

__all__: list[str] = []
