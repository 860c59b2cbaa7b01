"""``eventforge demo`` and ``eventforge worker``: thin doors to their own modules."""

from __future__ import annotations

import argparse

from eventforge.cli._base import command
from eventforge.cli._demo import main as demo_main
from eventforge.worker import main as worker_main

__all__: list[str] = []


@command("demo", "run the walk-through on the in-process transport", passthrough=True)
def _demo(args: argparse.Namespace) -> int:
    return demo_main(list(args.extra))


@command(
    "worker", "serve a module's HANDLERS over RPC, or run a Service: MODULE:SVC", passthrough=True
)
def _worker(args: argparse.Namespace) -> int:
    return worker_main(list(args.extra), prog="eventforge worker")
