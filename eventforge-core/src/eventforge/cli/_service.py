"""``eventforge run``, ``eventforge asyncapi`` and ``eventforge status``: doors to
:mod:`eventforge.service.run`."""

from __future__ import annotations

import argparse

from eventforge.cli._base import command
from eventforge.service.run import asyncapi_main, status_main
from eventforge.service.run import main as run_main

__all__: list[str] = []


@command("run", "run a Service: eventforge run module:svc [--workers N]", passthrough=True)
def _run(args: argparse.Namespace) -> int:
    return run_main(list(args.extra))


@command("asyncapi", "print a Service's AsyncAPI 3.0 document (JSON or YAML)", passthrough=True)
def _asyncapi(args: argparse.Namespace) -> int:
    return asyncapi_main(list(args.extra))


@command(
    "status",
    "print a running service's health: eventforge status http://HOST:PORT",
    passthrough=True,
)
def _status(args: argparse.Namespace) -> int:
    return status_main(list(args.extra))
