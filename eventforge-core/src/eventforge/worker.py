"""The generic worker: serve a module's ``HANDLERS`` over RPC, no transport boilerplate.

::

    python -m eventforge.worker --import handlers --service math --port 9090
    eventforge worker --import handlers --port 9090 --mode thread --workers 8

The handler module must define ``HANDLERS``, a non-empty dict of ``{method name: callable}``,
and may define ``SERVICE_NAME`` (``--service`` wins over it; the default is ``"rpc"``). By
default the worker listens with a TCP server on ``--host``/``--port`` (port 0 picks a free
one); ``--transport URL`` serves over any transport instead: ``tcp://hub:9090`` joins a hub as
a client (workers sharing a service name then share the calls, each call run once),
``redis://...`` or ``nats://...`` serve through a broker. ``--mode``/``--workers`` run calls on
an :class:`~eventforge.execution.Executor` (thread or process pool) instead of inline.

``python -m eventforge.worker billing:svc [options]`` (a ``module:attribute`` first) runs a
:class:`~eventforge.service.Service` as ``eventforge run`` does.

When it serves, the worker prints one readiness line on stdout::

    eventforge worker ready service=math methods=add,compute url=tcp://127.0.0.1:9090 pid=4242

SIGTERM (or SIGINT) shuts it down gracefully: it stops taking calls, lets the calls in flight
finish (up to ``--drain-timeout`` seconds), sends their replies and exits with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, ModuleType
from typing import Any

from eventforge.config import FORMATS, LEVELS, connect, level_name, setup_logging
from eventforge.errors import ConfigurationError, EventforgeError
from eventforge.execution import ExecutionMode, Executor
from eventforge.message import Message
from eventforge.plugins import registry
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCServer
from eventforge.service.run import main as run_service
from eventforge.transport import Transport
from eventforge.transport.urls import mask_url

__all__ = ["HandlerModuleError", "Worker", "load_handlers", "main"]

log = logging.getLogger("eventforge.worker")

DEFAULT_SERVICE = "rpc"
READY_PREFIX = "eventforge worker ready"


class HandlerModuleError(EventforgeError):
    """The ``--import`` module cannot be imported or does not follow the worker contract."""


def _import_module(spec: str) -> ModuleType:
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise HandlerModuleError(f"handler file {spec!r} does not exist")
        name = os.path.splitext(os.path.basename(path))[0]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise HandlerModuleError(f"cannot load handler file {spec!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and spec.startswith(exc.name):
            raise HandlerModuleError(
                f"cannot import handler module {spec!r}: no module named {exc.name!r}. Run the "
                f"worker from the directory that holds {spec.replace('.', '/')}.py, set "
                "PYTHONPATH, or pass a file path"
            ) from None
        raise


def load_handlers(spec: str) -> tuple[dict[str, Callable[..., Any]], str | None]:
    """Import ``spec`` (module name or ``.py`` path); return its HANDLERS and SERVICE_NAME.

    Raises :class:`HandlerModuleError` saying what is missing or malformed.
    """
    module = _import_module(spec)
    where = f"handler module {spec!r} ({getattr(module, '__file__', '?')})"
    handlers = getattr(module, "HANDLERS", None)
    if handlers is None:
        raise HandlerModuleError(
            f"{where} defines no HANDLERS; add a dict of method name -> function, for example "
            "HANDLERS = {'compute': compute}"
        )
    if not isinstance(handlers, dict):
        raise HandlerModuleError(
            f"{where}: HANDLERS must be a dict of method name -> function, got "
            f"{type(handlers).__name__}"
        )
    if not handlers:
        raise HandlerModuleError(f"{where}: HANDLERS is empty; register at least one function")
    for name, func in handlers.items():
        if not isinstance(name, str) or not name:
            raise HandlerModuleError(f"{where}: HANDLERS key {name!r} must be a non-empty string")
        if not callable(func):
            raise HandlerModuleError(
                f"{where}: HANDLERS[{name!r}] is a {type(func).__name__}, not a callable"
            )
    service = getattr(module, "SERVICE_NAME", None)
    if service is not None and (not isinstance(service, str) or not service):
        raise HandlerModuleError(f"{where}: SERVICE_NAME must be a non-empty string")
    return dict(handlers), service


class Worker:
    """An RPC server for a set of handlers on one transport, with a graceful stop.

    Calls in flight are counted (inline and thread modes) so that :meth:`stop` can wait for
    them; in process mode the executor's own shutdown waits for the running calls.
    """

    def __init__(
        self,
        handlers: dict[str, Callable[..., Any]],
        transport: Transport,
        *,
        service_name: str = DEFAULT_SERVICE,
        executor: Executor | None = None,
    ) -> None:
        self.transport = transport
        self.service_name = service_name
        self.executor = executor
        self.queue = MessageQueue(transport=transport)
        self._in_flight = 0
        self._calls_open = 0  # calls being handled, their reply included
        self._idle = threading.Condition()
        self.rpc: RPCServer = _DrainableRPCServer(
            self, self.queue, executor=executor, service_name=service_name
        )
        track = executor is None or executor.mode != ExecutionMode.PROCESS
        for name, func in handlers.items():
            self.rpc.add_method(name, self._tracked(func) if track else func)
        self._stopped = threading.Event()

    def _tracked(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._idle:
                self._in_flight += 1
            try:
                return func(*args, **kwargs)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()

        call.__name__ = getattr(func, "__name__", "handler")
        call.__doc__ = func.__doc__
        return call

    @property
    def in_flight(self) -> int:
        """Calls running right now (inline and thread modes)."""
        return self._in_flight

    def start(self) -> Worker:
        """Start answering calls."""
        if self.executor is not None:
            self.executor.start()
        self.rpc.serve(blocking=False)
        return self

    def stop(self, drain_timeout: float = 30.0) -> bool:
        """Stop taking calls, finish those in flight, close; return whether all finished."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        self.rpc.stop()
        deadline = time.monotonic() + drain_timeout
        drained = True
        with self._idle:
            while self._in_flight or self._calls_open:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    drained = False
                    log.warning(
                        "%d calls still running after %.1fs",
                        max(self._in_flight, self._calls_open),
                        drain_timeout,
                    )
                    break
                self._idle.wait(remaining)
        if self.executor is not None:
            self.executor.stop(wait=True)
        # Replies of executor and coroutine calls are sent from the event loop afterwards.
        if not self.rpc._wait_replies(max(0.0, deadline - time.monotonic())):
            drained = False
            log.warning("replies still unsent after %.1fs", drain_timeout)
        self.queue.close()
        return drained


class _DrainableRPCServer(RPCServer):
    """The worker's RPC server: counts each call until its handling, reply included, is over.

    Counting only the method's body let :meth:`Worker.stop` close the queue between a method
    returning and its reply going out.
    """

    def __init__(self, worker: Worker, queue: MessageQueue, **options: Any) -> None:
        super().__init__(queue, **options)
        self._worker = worker

    def _on_call(self, message: Message) -> None:
        worker = self._worker
        with worker._idle:
            worker._calls_open += 1
        try:
            super()._on_call(message)
        finally:
            with worker._idle:
                worker._calls_open -= 1
                worker._idle.notify_all()


def _url_of(transport: Transport, requested: str | None) -> str:
    """Where the worker serves, for the readiness line (credentials masked)."""
    url = transport.url
    if url:
        return str(url)
    if requested:
        return mask_url(requested)
    return transport.name


def _build_transport(args: argparse.Namespace) -> Transport:

    token = args.token or os.environ.get("EVENTFORGE_TOKEN") or None
    options: dict[str, Any] = {"token": token} if token else {}
    if args.transport:
        return connect(args.transport, **options)

    reg = registry()
    entry = reg.transport("tcp")
    module = importlib.import_module(entry.spec.module)
    server_cls = module.TCPServerTransport
    transport: Transport = server_cls(args.host, args.port, **options).start()
    return transport


def _log_level(text: str) -> str:
    try:
        return level_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the HANDLERS of a module over RPC.",
    )
    parser.add_argument(
        "--import", dest="module", required=True, help="module name or .py file with HANDLERS"
    )
    parser.add_argument("--service", help="RPC service name (default: SERVICE_NAME, else 'rpc')")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (TCP server)")
    parser.add_argument("--port", type=int, default=9090, help="port to listen on; 0 = any free")
    parser.add_argument(
        "--transport",
        help="serve over this transport URL instead (tcp://hub:9090 joins a hub; redis://, nats://)",
    )
    parser.add_argument(
        "--mode",
        choices=[m.value for m in ExecutionMode],
        help="run calls on an Executor in this mode (default: inline, or thread with --workers)",
    )
    parser.add_argument("--workers", type=int, help="executor pool size")
    parser.add_argument(
        "--token", help="shared token for the TCP hello (prefer the EVENTFORGE_TOKEN variable)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to finish in-flight calls"
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default="WARNING",
        metavar="LEVEL",
        help=f"logging level: {', '.join(LEVELS)} (default WARNING)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines, or one JSON object per line (default text)",
    )
    return parser


def _executor(args: argparse.Namespace) -> Executor | None:
    mode = args.mode or ("thread" if args.workers else None)
    if mode is None or mode == ExecutionMode.SEQUENTIAL.value:
        return None
    if args.workers is not None and args.workers < 1:
        raise ConfigurationError("--workers must be at least 1", key="workers")
    return Executor(mode=mode, max_workers=args.workers or 4)


def main(argv: Sequence[str] | None = None, prog: str = "python -m eventforge.worker") -> int:
    """Run a worker until SIGTERM/SIGINT; return the exit code.

    ``prog`` is the command name shown in the usage (``eventforge worker`` from the CLI). A
    first argument of the form ``module:attribute`` names a :class:`~eventforge.service.Service`
    instead of a ``HANDLERS`` module: the rest is read as ``eventforge run`` reads it.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and ":" in arguments[0] and not arguments[0].startswith("-"):
        return run_service(arguments)
    args = _parser(prog).parse_args(arguments)
    setup_logging(args.log_level, args.log_format)
    try:
        handlers, module_service = load_handlers(args.module)
        service = args.service or module_service or DEFAULT_SERVICE
        executor = _executor(args)
        transport = _build_transport(args)
    except (EventforgeError, ValueError) as exc:
        print(f"eventforge worker: error: {exc}", file=sys.stderr)
        return 2
    worker = Worker(handlers, transport, service_name=service, executor=executor)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start()
        print(
            f"{READY_PREFIX} service={service} methods={','.join(sorted(handlers))} "
            f"url={_url_of(transport, args.transport)} pid={os.getpid()}",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        drained = worker.stop(args.drain_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"eventforge worker stopped service={service} drained={drained}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
