"""Hook implementations of eventforge-redis (nothing registered until the feature lands)."""

from __future__ import annotations

__all__: list[str] = []
