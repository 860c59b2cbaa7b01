"""``eventforge run module:svc``: run a :class:`Service`, in one process or a supervised pool.

::

    eventforge run billing:svc --transport redis://localhost:6379/0 --workers 4 --health-port 8080

With ``--workers 1`` (the default) the service runs in this process. With more, this process
becomes a supervisor: it starts that many worker processes, restarts one that dies (with a
capped, jittered backoff), serves the health endpoints for all of them, and on SIGTERM / SIGINT
asks each worker to drain and exits once they have. ``--reload`` (development) restarts the
workers when a ``.py`` file under the current directory changes; it needs ``watchfiles``
(``pip install 'eventforge-core[reload]'``).

Each worker prints one line on stdout when it is ready::

    eventforge service ready name=billing pid=4242 url=redis://broker:6379/0 health=http://127.0.0.1:40123
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import ModuleType

from eventforge.errors import ConfigurationError
from eventforge.service._logging import configure_logging, log_level
from eventforge.service._pool import WorkerPool, stop_when_orphaned
from eventforge.service.app import Service
from eventforge.service.asyncapi import asyncapi_document, dump_document
from eventforge.service.http import HealthServer
from eventforge.transport.urls import mask_url

__all__ = [
    "asyncapi_main",
    "build_parser",
    "load_service",
    "main",
    "status_main",
    "status_table",
]

log = logging.getLogger("eventforge.run")

READY_PREFIX = "eventforge service ready"


def load_service(target: str) -> Service:
    """Import ``module:attribute`` (or ``module``, holding exactly one :class:`Service`)."""
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise ConfigurationError(
            f"cannot load {target!r}: write module:attribute, e.g. billing:svc", key="target"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} (from {target!r}): {exc}; run from the directory "
            "that holds it or put it on PYTHONPATH",
            key="target",
        ) from exc
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Service):
            raise ConfigurationError(
                f"{target!r} is not a Service (got {type(found).__name__}); name the Service "
                "object: module:attribute",
                key="target",
            )
        return found
    services = [v for v in vars(module).values() if isinstance(v, Service)]
    if len(services) != 1:
        raise ConfigurationError(
            f"module {module_name!r} holds {len(services)} Service objects; name one: "
            f"{module_name}:attribute",
            key="target",
        )
    return services[0]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``eventforge run``."""
    parser = argparse.ArgumentParser(
        prog="eventforge run",
        description="Run a Service: its subscribers, RPC methods, consumers and tasks.",
    )
    parser.add_argument("target", help="module:attribute naming the Service (e.g. billing:svc)")
    parser.add_argument("--transport", help="transport name or URL (overrides the service's)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1: run in this process)"
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="serve /livez /readyz /health /metrics and / on this port (0 picks a free one)",
    )
    parser.add_argument(
        "--health-host", default="127.0.0.1", help="address for the health endpoints (loopback)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds to let work in flight finish on shutdown (default: the service's)",
    )
    parser.add_argument("--log-level", type=log_level, default="INFO", help="debug ... critical")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--reload", action="store_true", help="restart workers when a .py file changes (dev)"
    )
    return parser


def _run_here(svc: Service, args: argparse.Namespace) -> int:
    if args.transport:
        svc.use_transport(args.transport)
    if args.drain_timeout is not None:
        svc.drain_timeout = args.drain_timeout
    server: HealthServer | None = None
    if args.health_port is not None:
        server = HealthServer(svc.health, args.health_host, args.health_port)

    def announce() -> None:
        url = svc.queue.transport.url
        where = f" url={mask_url(url)}" if isinstance(url, str) else ""
        health = f" health={server.url}" if server is not None else ""
        print(f"{READY_PREFIX} name={svc.name} pid={os.getpid()}{where}{health}", flush=True)

    stop_when_orphaned(svc.request_stop)
    try:
        svc.run(on_ready=announce)
    finally:
        if server is not None:
            server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eventforge run``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.health_port is not None and not 0 <= args.health_port <= 65535:
        parser.error(f"--health-port must be 0..65535, got {args.health_port}")
    configure_logging(args.log_level, args.log_format)
    try:
        svc = load_service(args.target)
        if args.workers == 1 and not args.reload:
            return _run_here(svc, args)
    except ConfigurationError as exc:
        print(f"eventforge run: {exc}", file=sys.stderr)
        return 2
    child_args = [args.target, "--workers", "1", "--health-port", "0"]
    child_args += ["--log-level", args.log_level, "--log-format", args.log_format]
    if args.transport:
        child_args += ["--transport", args.transport]
    if args.drain_timeout is not None:
        child_args += ["--drain-timeout", str(args.drain_timeout)]
    pool = WorkerPool(
        [sys.executable, "-m", "eventforge.service.run", *child_args],
        workers=args.workers,
        drain_timeout=svc.drain_timeout if args.drain_timeout is None else args.drain_timeout,
        reload=args.reload,
        name=svc.name,
    )
    return pool.run(args.health_host, args.health_port)


def asyncapi_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eventforge asyncapi module:svc``: print the AsyncAPI 3.0 document."""
    parser = argparse.ArgumentParser(
        prog="eventforge asyncapi", description="Print a service's AsyncAPI 3.0 document."
    )
    parser.add_argument("target", help="module:attribute naming the Service")
    parser.add_argument("--format", choices=("json", "yaml"), default="json")
    parser.add_argument("--version", default="0.0.0", help="the API's version (info.version)")
    parser.add_argument("--transport", help="server URL to describe (secrets are masked)")
    parser.add_argument("--output", "-o", help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    try:
        svc = load_service(args.target)
        text = dump_document(
            asyncapi_document(svc, version=args.version, transport_url=args.transport),
            args.format,
        )
    except (ConfigurationError, RuntimeError) as exc:
        print(f"eventforge asyncapi: {exc}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


def status_table(report: dict[str, object]) -> str:
    """``/health`` as a table for a terminal: one line per subscription, then the reasons."""
    now = time.time()
    header = (
        "WORKER",
        "KIND",
        "HANDLER",
        "TARGET",
        "STATE",
        "DELIVERED",
        "PER S",
        "ERRORS",
        "BACKLOG",
        "LAST",
    )
    rows: list[tuple[str, ...]] = []
    subscriptions = report.get("subscriptions")
    for sub in subscriptions if isinstance(subscriptions, list) else []:
        last = sub.get("last_delivery")
        ago = f"{now - last:.0f}s ago" if isinstance(last, (int, float)) else "never"
        backlog = sub.get("backlog")
        rows.append(
            (
                str(sub.get("worker", "-")),
                str(sub.get("kind")),
                str(sub.get("name"))[-30:],
                str(sub.get("target"))[:30],
                str(sub.get("state")),
                str(sub.get("delivered")),
                f"{float(rate):.1f}" if isinstance(rate := sub.get("rate"), (int, float)) else "-",
                str(sub.get("errors")),
                "-" if backlog is None else str(backlog),
                ago,
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{report.get('service')}: {report.get('status')}"]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    reasons = report.get("reasons")
    lines += [f"  - {r}" for r in (reasons if isinstance(reasons, list) else [])]
    return "\n".join(lines) + "\n"


def status_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eventforge status URL``: 0 ready, 1 not ready, 2 unreachable."""
    parser = argparse.ArgumentParser(
        prog="eventforge status",
        description="Print a running service's health (from its --health-port endpoints).",
    )
    parser.add_argument("url", help="the health address, e.g. http://127.0.0.1:8080")
    parser.add_argument("--json", action="store_true", help="print the /health JSON as is")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:  # 503: not ready, still a report
        body = exc.read()
    except (OSError, ValueError) as exc:
        print(f"eventforge status: cannot reach {url}/health: {exc}", file=sys.stderr)
        return 2
    try:
        report = json.loads(body)
    except ValueError:
        print(f"eventforge status: {url}/health did not answer JSON", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else status_table(report))
    return 0 if report.get("status") == "ready" else 1


if __name__ == "__main__":
    sys.exit(main())
