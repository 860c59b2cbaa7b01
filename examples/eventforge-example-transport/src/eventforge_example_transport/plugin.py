"""Hook implementations (registered once the transport lands)."""

from __future__ import annotations

__all__: list[str] = []
