"""``eventforge plugins``: what is installed, fitted to the terminal, and what is not.

Listing never imports a plugin's target: a plugin whose driver is missing is listed with the
missing module instead of crashing the listing. The table fits the terminal width (long cells
are cut with "…"); ``--wide`` and ``--json`` give the full text.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from eventforge.cli._base import command
from eventforge.plugins import KINDS, KNOWN_DISTRIBUTIONS, SCHEME_ONLY, registry

__all__ = ["COLUMNS", "plugin_rows"]

COLUMNS = (
    "kind",
    "name",
    "aliases",
    "distribution",
    "version",
    "status",
    "capabilities",
    "summary",
)


@contextlib.contextmanager
def _lenient_discovery() -> Iterator[None]:
    """Report broken plugins in the listing instead of warning or (strict mode) failing."""
    strict = os.environ.pop("EVENTFORGE_STRICT_PLUGINS", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        if strict is not None:
            os.environ["EVENTFORGE_STRICT_PLUGINS"] = strict


def plugin_rows(kind: str | None = None) -> list[dict[str, Any]]:
    """One row per record (plus one per failed or disabled plugin), without importing targets.

    Failed and disabled plugins are listed under kind ``plugin`` whatever ``kind`` asks for,
    since what they would provide is unknown.
    """
    with _lenient_discovery():
        reg = registry()
    conflicts: dict[tuple[str, str], str] = {}
    for error in reg.conflicts():
        conflicts.setdefault((error.kind, error.name), " and ".join(error.providers))
    rows: list[dict[str, Any]] = []
    for entry in reg.entries(kind):
        spec, info = entry.spec, entry.plugin
        status = "ok"
        missing = reg.missing_requirements(entry)
        clash = conflicts.get((spec.kind, repr(spec.name)))
        if clash:
            status = f"conflict: {spec.name!r} claimed by {clash}"
        elif missing:
            status = f"missing: {', '.join(missing)} ({reg.install_hint(entry, missing)})"
        rows.append(
            {
                "kind": spec.kind,
                "name": spec.name,
                "aliases": list(spec.aliases),
                "schemes": list(getattr(spec, "schemes", ())),
                "distribution": info.distribution,
                "version": info.version,
                "entry_point": info.name,
                "status": status,
                "capabilities": sorted(getattr(spec, "capabilities", ())),
                "summary": spec.summary,
                "target": spec.target,
            }
        )
    for info in reg.plugins():
        if info.status != "ok":
            status = info.status if info.status != "failed" else f"failed: {info.reason}"
            rows.append(
                {
                    "kind": "plugin",
                    "name": info.name,
                    "aliases": [],
                    "schemes": [],
                    "distribution": info.distribution,
                    "version": info.version,
                    "entry_point": info.name,
                    "status": status,
                    "capabilities": [],
                    "summary": "",
                    "target": "",
                }
            )
    for (known_kind, name), dist in KNOWN_DISTRIBUTIONS.items():
        if kind not in (None, known_kind) or name in SCHEME_ONLY or reg.distribution(dist):
            continue
        rows.append(
            {
                "kind": known_kind,
                "name": name,
                "aliases": [],
                "schemes": [],
                "distribution": dist,
                "version": "",
                "entry_point": "",
                "status": f"not installed: pip install {dist}",
                "capabilities": [],
                "summary": "",
                "target": "",
            }
        )
    return rows


DROPPABLE = ("capabilities", "aliases", "summary")
"""Left out, in this order, while the table cannot fit the terminal (``--wide`` shows them)."""
WRAPPED = ("summary", "status")
"""Narrowed, widest first, down to MIN_WIDTH, their text wrapped onto more lines."""
MIN_WIDTH = 12
GAP = 2


def _table(rows: Sequence[dict[str, Any]], width: int | None = None) -> str:
    """The rows as aligned columns, fitted to ``width`` characters when given."""
    columns = list(COLUMNS)
    cells = {
        c: [c.upper()]
        + [", ".join(v) if isinstance(v, list) else str(v) for v in (r[c] for r in rows)]
        for c in columns
    }
    widths = {c: max(map(len, cells[c])) for c in columns}

    def total(narrowest: bool = False) -> int:
        shown = [
            min(widths[c], MIN_WIDTH) if narrowest and c in WRAPPED else widths[c] for c in columns
        ]
        return sum(shown) + GAP * (len(columns) - 1)

    if width is not None:
        for column in DROPPABLE:
            # capabilities go as soon as the table is too wide; the others only when it cannot
            # fit even with the wrapped columns at their narrowest
            if total(narrowest=column != "capabilities") > width:
                columns.remove(column)
        wrapped = [c for c in WRAPPED if c in columns]
        while total() > width:
            widest = max(wrapped, key=lambda c: widths[c])
            runner_up = max((widths[c] for c in wrapped if c != widest), default=MIN_WIDTH)
            if widths[widest] <= MIN_WIDTH:
                break  # as narrow as it goes: lines are cut at the edge instead
            step = min(total() - width, max(1, widths[widest] - runner_up))
            widths[widest] = max(MIN_WIDTH, widths[widest] - step)
    lines: list[str] = []
    for i in range(len(rows) + 1):
        parts = [textwrap.wrap(cells[c][i], widths[c]) or [""] for c in columns]
        for k in range(max(map(len, parts))):
            texts = [p[k] if k < len(p) else "" for p in parts]
            line = (
                (" " * GAP)
                .join(t.ljust(widths[c]) for t, c in zip(texts, columns, strict=True))
                .rstrip()
            )
            lines.append(line if width is None or len(line) <= width else line[: width - 1] + "…")
    return "\n".join(lines)


def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--kind", choices=KINDS, help="list only this kind")
    parser.add_argument(
        "--wide", action="store_true", help="do not cut the table to the terminal width"
    )


@command(
    "plugins",
    "list installed transports, serializers, dispatchers, observers and middleware",
    _plugins_arguments,
)
def _plugins(args: argparse.Namespace) -> int:
    rows = plugin_rows(args.kind)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = None if args.wide else shutil.get_terminal_size().columns
        print(_table(rows, width))
    return 0
