"""``eventforge.hookspecs``: kept for plugins and applications; the code lives in :mod:`eventforge.plugins.hookspecs`."""

from __future__ import annotations

from eventforge.plugins.hookspecs import (
    PROJECT_NAME as PROJECT_NAME,
)
from eventforge.plugins.hookspecs import (
    hookimpl as hookimpl,
)
from eventforge.plugins.hookspecs import (
    hookspec as hookspec,
)

__all__ = [
    "PROJECT_NAME",
    "hookimpl",
    "hookspec",
]
