"""The ``eventforge`` command: ``eventforge plugins``, ``eventforge demo``, ``--version``.

Subcommands live in :data:`COMMANDS` (name -> :class:`Command`), so a feature adds its own
with :func:`command`. Listing plugins never imports a plugin's target: a plugin whose driver
is missing is listed with the missing module instead of crashing the listing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["COMMANDS", "Command", "command", "main", "plugin_rows"]

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


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its arguments, and what it runs (returns the exit code).

    A ``passthrough`` command receives the arguments it does not declare in ``args.extra``
    (for commands that hand them to another parser).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    passthrough: bool = False


COMMANDS: dict[str, Command] = {}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A subcommand without arguments."""


def command(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments,
    *,
    passthrough: bool = False,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as subcommand ``name``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(help, add_arguments, run, passthrough)
        return run

    return register


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
    from ._registry import registry

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
    return rows


def _table(rows: Sequence[dict[str, Any]]) -> str:
    cells = [
        [", ".join(v) if isinstance(v, list) else str(v) for v in (row[c] for c in COLUMNS)]
        for row in rows
    ]
    header = [c.upper() for c in COLUMNS]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *cells]
    ]
    return "\n".join(lines)


def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    from ._registry import KINDS

    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--kind", choices=KINDS, help="list only this kind")


@command(
    "plugins",
    "list installed transports, serializers, dispatchers, observers and middleware",
    _plugins_arguments,
)
def _plugins(args: argparse.Namespace) -> int:
    rows = plugin_rows(args.kind)
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0


@command("demo", "run the walk-through on the in-process transport", passthrough=True)
def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(list(args.extra))


@command(
    "worker", "serve a module's HANDLERS over RPC (python -m eventforge.worker)", passthrough=True
)
def _worker(args: argparse.Namespace) -> int:
    from .worker import main as worker_main

    return worker_main(list(args.extra))


@command("run", "run a Service: eventforge run module:svc [--workers N]", passthrough=True)
def _run(args: argparse.Namespace) -> int:
    from .service.run import main as run_main

    return run_main(list(args.extra))


@command("asyncapi", "print a Service's AsyncAPI 3.0 document (JSON or YAML)", passthrough=True)
def _asyncapi(args: argparse.Namespace) -> int:
    from .service.run import asyncapi_main

    return asyncapi_main(list(args.extra))


@command(
    "status",
    "print a running service's health: eventforge status http://HOST:PORT",
    passthrough=True,
)
def _status(args: argparse.Namespace) -> int:
    from .service.run import status_main

    return status_main(list(args.extra))


def _version() -> str:
    from . import __version__

    return f"eventforge {__version__} (Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="eventforge", description="Message-driven work: pub/sub, RPC and task execution."
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=cmd.help, description=cmd.help, add_help=not cmd.passthrough
        )
        cmd.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eventforge`` command; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not COMMANDS[args.command].passthrough:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return COMMANDS[args.command].run(args)
    except BrokenPipeError:  # e.g. `eventforge plugins | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
