"""The command registry and the top-level parser of the ``eventforge`` command.

Subcommands live in :data:`COMMANDS` (name -> :class:`Command`); a module adds its own with
:func:`command`. The modules of the built-in commands are listed in :data:`COMMAND_MODULES`
and imported only when their command runs (or for the full help), so ``eventforge plugins``
does not pay for the imports of ``eventforge call``. ``eventforge`` without a command prints
the help to stderr and exits 2, the way argparse reports any other usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventforge import __version__

__all__ = [
    "COMMANDS",
    "COMMAND_MODULES",
    "EXIT_CODES",
    "Command",
    "build_parser",
    "command",
    "load_commands",
    "main",
]

COMMAND_MODULES = {
    "plugins": "eventforge.cli._plugins",
    "publish": "eventforge.cli._verbs",
    "subscribe": "eventforge.cli._verbs",
    "request": "eventforge.cli._verbs",
    "call": "eventforge.cli._verbs",
    "worker": "eventforge.cli._commands",
    "demo": "eventforge.cli._commands",
    "run": "eventforge.cli._service",
    "asyncapi": "eventforge.cli._service",
    "status": "eventforge.cli._service",
}
"""Which module registers each built-in command (imported when the command is used)."""

EXIT_CODES = {
    0: "success",
    1: "no answer: a request or call timed out or nobody listens, or subscribe got fewer messages than --count",
    2: "usage error: bad arguments or JSON, unknown transport, invalid configuration",
    3: "the remote side failed: the called method raised, or does not exist",
    4: "transport error: cannot connect, or the connection was lost",
}
"""What the exit status of ``eventforge`` means, for scripts (``eventforge --help`` lists it)."""


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


def _version() -> str:
    return f"eventforge {__version__} (Python {sys.version.split()[0]})"


def load_commands(names: Sequence[str] | None = None) -> None:
    """Import the modules that register the commands ``names`` (default: every command)."""
    wanted = COMMAND_MODULES if names is None else [n for n in names if n in COMMAND_MODULES]
    for module in dict.fromkeys(COMMAND_MODULES[n] for n in wanted):
        importlib.import_module(module)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per entry of :data:`COMMANDS`."""
    codes = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="eventforge",
        description="Message-driven work: pub/sub, RPC and task execution.",
        epilog=f"exit status:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    words = list(sys.argv[1:] if argv is None else argv)
    first = next((w for w in words if not w.startswith("-")), None)
    load_commands(None if first not in COMMAND_MODULES else [first])
    parser = build_parser()
    args, extra = parser.parse_known_args(words)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("\neventforge: error: a command is required", file=sys.stderr)
        return 2
    if extra and not COMMANDS[args.command].passthrough:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return COMMANDS[args.command].run(args)
    except BrokenPipeError:  # e.g. `eventforge plugins | head`
        return 0
