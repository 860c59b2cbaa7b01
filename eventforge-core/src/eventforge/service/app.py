"""``Service``: one object that owns an application's handlers, starts them and stops them.

::

    svc = Service("billing", "redis://localhost:6379/0")

    @svc.on("orders.created", publish_to="orders.billed")
    def bill(message):
        return {"order": message.payload["id"], "amount": 10}

    @svc.rpc()
    def refund(order: str) -> bool: ...

    @svc.consumer("invoices", concurrency=4)
    def send_invoice(message): ...

    svc.run()            # or: eventforge run billing:svc --workers 4

It is composed from the seed API (a :class:`~eventforge.queue.MessageQueue`, one
:class:`~eventforge.rpc.RPCServer` per RPC service name, :class:`~eventforge.workqueue.WorkQueue`
consumers, ``@task``) and adds a start/stop order, draining, and health per subscription.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from eventforge._rpc_protocol import RPC_TOPIC_PREFIX
from eventforge.config import Settings, connect
from eventforge.errors import ConfigurationError
from eventforge.events import event_info, event_type_of
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCServer
from eventforge.tasks import task as make_task
from eventforge.topics import validate_pattern, validate_topic
from eventforge.transport import Transport
from eventforge.workqueue import Consumer, RetryPolicy, WorkQueue

from ._declarations import Endpoint, _Consumer, _RPCService, _Subscriber, _Task
from ._handlers import attribute, call_hook, observed, pending, publishers, unready
from .health import HealthState, Tracker, link_state

__all__ = ["Endpoint", "Service"]

log = logging.getLogger("eventforge.service")

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[[], Any]


class Service:
    """An application's subscribers, RPC methods, work-queue consumers and tasks, run as one.

    ``transport`` is a name or URL (``"nats://localhost:4222"``), :class:`~eventforge.config.Settings`,
    a :class:`~eventforge.transport.Transport`, or ``None`` for the configured default
    (``EVENTFORGE_TRANSPORT``, a settings file); ``queue=`` runs on an existing queue instead
    (the service then leaves it open on stop). Decorators declare; :meth:`start` subscribes
    everything in declaration order, after the startup hooks; :meth:`stop` drains consumers and
    RPC calls in flight within ``drain_timeout`` seconds, unsubscribes, then runs the shutdown
    hooks. A subscription with no delivery for ``idle_after`` seconds is reported ``idle``.
    """

    def __init__(
        self,
        name: str = "service",
        transport: str | Settings | Transport | None = None,
        *,
        queue: MessageQueue | None = None,
        drain_timeout: float = 10.0,
        idle_after: float = 60.0,
    ) -> None:
        if queue is not None and transport is not None:
            raise ConfigurationError(
                "pass either transport= or queue= to Service, not both (the queue already has "
                "a transport)",
                key="transport",
            )
        if drain_timeout < 0 or idle_after <= 0:
            raise ValueError("drain_timeout must be >= 0 and idle_after > 0 (seconds)")
        self.name = validate_topic(name)
        self.transport_spec = transport
        self.drain_timeout = drain_timeout
        self.idle_after = idle_after
        self._queue = queue
        self._owns_queue = queue is None
        self._subscribers: list[_Subscriber] = []
        self._consumers: list[_Consumer] = []
        self._rpc: dict[str, _RPCService] = {}
        self._tasks: list[_Task] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._lock = threading.Lock()
        self._running = False
        self._stop_requested = threading.Event()

    # -- declaring --------------------------------------------------------------------------

    def on(
        self,
        topic: str | type,
        *,
        publish_to: str | None = None,
        required: bool = True,
        **options: Any,
    ) -> Callable[[F], F]:
        """Decorator: subscribe the function to ``topic`` when the service starts.

        ``options`` are :meth:`MessageQueue.subscribe`'s (``group=``, ``threaded=``, ``match=``,
        ...). With ``publish_to``, a return value other than ``None`` is published there. A
        subscription that is not ``required`` is reported but does not decide readiness.
        The function is returned unchanged, so it stays callable in tests.
        """
        if isinstance(topic, str):
            validate_pattern(topic)
        if publish_to is not None:
            validate_topic(publish_to)
        group = options.get("group")

        def declare(func: F) -> F:
            target = topic if isinstance(topic, str) else getattr(topic, "__name__", str(topic))
            tracker = Tracker(
                name=f"{getattr(func, '__qualname__', repr(func))}",
                kind="group" if group else "subscription",
                target=target,
                required=required,
                group=group,
            )
            self._declare(_Subscriber(topic, func, dict(options), publish_to, tracker))
            return func

        return declare

    def rpc(self, name: str | None = None, *, service: str | None = None) -> Callable[[F], F]:
        """Decorator: serve the function as RPC method ``name`` of ``service`` (default: the
        service's own name), called with :class:`~eventforge.rpc.RPCClient`."""
        service_name = service or self.name

        def declare(func: F) -> F:
            method = name or func.__name__
            with self._lock:
                self._check_not_running()
                entry = self._rpc.setdefault(service_name, _RPCService(service_name))
                if method in entry.methods:
                    raise ValueError(f"RPC method {method!r} of {service_name!r} is declared twice")
                entry.methods[method] = func
            return func

        return declare

    def consumer(
        self,
        queue_name: str,
        *,
        concurrency: int = 1,
        retry: RetryPolicy | None = None,
        required: bool = True,
        **options: Any,
    ) -> Callable[[F], F]:
        """Decorator: consume work queue ``queue_name`` with ``concurrency`` threads.

        ``retry`` and ``options`` (``visibility_timeout=``, ``max_size=``) configure the
        :class:`~eventforge.workqueue.WorkQueue`. The handler acks by returning and nacks by
        raising, as with :meth:`WorkQueue.consume`.
        """
        validate_topic(queue_name)
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if retry is not None:
            options["retry"] = retry

        def declare(func: F) -> F:
            tracker = Tracker(
                name=getattr(func, "__qualname__", repr(func)),
                kind="consumer",
                target=queue_name,
                required=required,
            )
            self._declare(_Consumer(queue_name, func, concurrency, dict(options), tracker))
            return func

        return declare

    def task(self, **options: Any) -> Callable[[F], F]:
        """Decorator: make the function a ``@task`` on the service's queue when it starts.

        ``options`` are :func:`eventforge.task`'s (``topic=``, ``executor=``, ...). After
        :meth:`start`, :meth:`bound_task` returns the bound task (with ``.publish``).
        """

        def declare(func: F) -> F:
            self._declare(_Task(func, dict(options)))
            return func

        return declare

    def on_startup(self, hook: F) -> F:
        """Decorator: run ``hook()`` (plain or ``async``) at start, before subscribing."""
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Decorator: run ``hook()`` at stop, after everything was drained and unsubscribed."""
        self._shutdown.append(hook)
        return hook

    def _declare(self, item: _Subscriber | _Consumer | _Task) -> None:
        with self._lock:
            self._check_not_running()
            if isinstance(item, _Subscriber):
                self._subscribers.append(item)
            elif isinstance(item, _Consumer):
                self._consumers.append(item)
            else:
                self._tasks.append(item)

    def _check_not_running(self) -> None:
        if self._running:
            raise RuntimeError(
                f"service {self.name!r} is running; declare handlers before start() (or stop it)"
            )

    # -- running ----------------------------------------------------------------------------

    @property
    def queue(self) -> MessageQueue:
        """The service's queue (built at :meth:`start` unless one was given)."""
        if self._queue is None:
            raise RuntimeError(f"service {self.name!r} has no queue until start()")
        return self._queue

    @property
    def running(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` has not."""
        return self._running

    def use_transport(self, transport: str | Settings | Transport) -> None:
        """Replace the transport before start (``eventforge run --transport`` does this)."""
        if not self._owns_queue:
            raise ConfigurationError(
                f"service {self.name!r} runs on a queue it was given; its transport cannot change",
                key="transport",
            )
        self._check_not_running()
        self.transport_spec = transport

    def work_queue(self, queue_name: str) -> WorkQueue:
        """The :class:`WorkQueue` a started consumer of ``queue_name`` takes its items from.

        On the memory transport the items live in this object, so producers in the same
        process put through it; on a durable transport any ``WorkQueue(queue_name, transport)``
        reaches the same items.
        """
        for item in self._consumers:
            if item.queue_name == queue_name and item.work_queue is not None:
                return item.work_queue
        raise LookupError(f"service {self.name!r} has no started consumer of {queue_name!r}")

    def consumer_of(self, queue_name: str) -> Consumer:
        """The running :class:`~eventforge.workqueue.Consumer` of ``queue_name``."""
        for item in self._consumers:
            if item.queue_name == queue_name and item.consumer is not None:
                return item.consumer
        raise LookupError(f"service {self.name!r} has no started consumer of {queue_name!r}")

    def bound_task(self, func: Callable[..., Any]) -> Any:
        """The ``@task`` that :meth:`task` made of ``func`` at start."""
        for item in self._tasks:
            if item.func is func and item.bound is not None:
                return item.bound
        raise LookupError(f"{func!r} is not a started task of service {self.name!r}")

    def start(self) -> None:
        """Run the startup hooks, then subscribe everything declared, in declaration order.

        If anything fails to start, what already started is stopped again and the error is
        raised.
        """
        with self._lock:
            if self._running:
                return
            self._running = True
        self._stop_requested.clear()
        try:
            if self._queue is None:
                spec = self.transport_spec
                transport = spec if isinstance(spec, Transport) else connect(spec)
                self._queue = MessageQueue(transport=transport, name=self.name)
            for hook in self._startup:
                call_hook(hook)
            self._start_subscribers()
            self._start_rpc()
            self._start_consumers()
            for item in self._tasks:
                item.bound = make_task(queue=self.queue, **item.options)(item.func)
        except BaseException:
            self.stop()
            raise
        log.info("service %r started: %s", self.name, self._summary())

    def _start_subscribers(self) -> None:
        queue = self.queue
        for sub in self._subscribers:
            publish, publish_async = publishers(queue, sub.publish_to)
            wrapped = observed(sub.handler, sub.tracker, publish, publish_async)
            try:
                sub.handler_id = queue.subscribe(sub.topic, wrapped, **sub.options)
            except Exception as exc:
                sub.tracker.set(HealthState.FAILED, f"subscribe failed: {exc}")
                raise
            sub.tracker.set(HealthState.IDLE)

    def _start_rpc(self) -> None:
        for entry in self._rpc.values():
            tracker = entry.tracker = Tracker(
                name=f"rpc:{entry.name}", kind="rpc", target=entry.name, required=True
            )
            server = entry.server = RPCServer(self.queue, service_name=entry.name)
            for method, func in entry.methods.items():
                server.add_method(method, observed(func, tracker))
            server.serve(blocking=False)
            tracker.alive = attribute(server, "serving")
            tracker.set(HealthState.IDLE)

    def _start_consumers(self) -> None:
        for item in self._consumers:
            work_queue = item.work_queue = WorkQueue(
                item.queue_name, self.queue.transport, **item.options
            )
            wrapped = observed(item.handler, item.tracker)
            consumer = item.consumer = work_queue.consume(wrapped, concurrency=item.concurrency)
            item.tracker.alive = attribute(consumer, "running")
            item.tracker.backlog = functools.partial(pending, work_queue)
            item.tracker.set(HealthState.IDLE)

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop everything (``timeout`` defaults to ``drain_timeout``), then run the
        shutdown hooks; the queue is closed if the service built it. Idempotent."""
        deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
        with self._lock:
            if not self._running:
                return
        for item in self._consumers:
            if item.consumer is not None:
                item.consumer.stop(timeout=max(0.0, deadline - time.monotonic()))
            if item.work_queue is not None:
                item.work_queue.close()
            item.tracker.set(HealthState.FAILED, "stopped")
            item.consumer = item.work_queue = None
        for entry in self._rpc.values():
            if entry.server is not None:
                entry.server.stop()
                entry.server = None
            if entry.tracker is not None:
                entry.tracker.set(HealthState.FAILED, "stopped")
        for task_item in self._tasks:
            if task_item.bound is not None:
                task_item.bound.unsubscribe()
                task_item.bound = None
        for sub in self._subscribers:
            if sub.handler_id is not None and self._queue is not None:
                self._queue.unsubscribe(sub.handler_id)
                sub.handler_id = None
            sub.tracker.set(HealthState.FAILED, "stopped")
        for hook in self._shutdown:
            try:
                call_hook(hook)
            except Exception:
                log.exception("service %r: shutdown hook %r failed", self.name, hook)
        if self._owns_queue and self._queue is not None:
            self._queue.close()
            self._queue = None
        with self._lock:
            self._running = False
        self._stop_requested.set()
        log.info("service %r stopped", self.name)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (safe from a signal handler or another thread)."""
        self._stop_requested.set()

    def run(self, *, install_signals: bool = True, on_ready: Hook | None = None) -> None:
        """Start, then block until SIGTERM / SIGINT (or :meth:`request_stop`), then stop.

        ``on_ready()`` is called once everything has started (``eventforge run`` prints its
        ready line there).
        """
        previous: dict[signal.Signals, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.info("service %r: signal %d, draining", self.name, signum)
                self.request_stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            if on_ready is not None:
                on_ready()
            while not self._stop_requested.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- health -----------------------------------------------------------------------------

    def trackers(self) -> list[Tracker]:
        """Every subscription's tracker, in declaration order."""
        rpc = [e.tracker for e in self._rpc.values() if e.tracker is not None]
        return [s.tracker for s in self._subscribers] + rpc + [c.tracker for c in self._consumers]

    def live(self) -> bool:
        """Whether the service is running and its queue is open."""
        return self._running and self._queue is not None and not self._queue.closed

    def health(self) -> dict[str, Any]:
        """Every subscription with its state, backlog and counters, plus readiness."""
        transport_stats: dict[str, Any] = {}
        if self._queue is not None and not self._queue.closed:
            transport_stats = self._queue.stats
        link = link_state(transport_stats.get("transport", {}))
        subs = [t.snapshot(idle_after=self.idle_after, link_up=link) for t in self.trackers()]
        reasons = unready(subs) if self._running else [f"service {self.name!r} is not running"]
        return {
            "service": self.name,
            "status": "ready" if not reasons else "unready",
            "live": self.live(),
            "reasons": reasons,
            "link_up": link,
            "subscriptions": subs,
            "queue": {k: v for k, v in transport_stats.items() if k != "transport"},
        }

    def ready(self) -> tuple[bool, list[str]]:
        """Whether every required subscription is ``active`` or ``idle``; else the reasons."""
        report = self.health()
        return not report["reasons"], list(report["reasons"])

    def endpoints(self) -> list[Endpoint]:
        """What the service declares, in declaration order (for documents such as AsyncAPI)."""
        out: list[Endpoint] = []
        for sub in self._subscribers:
            topic = sub.topic if isinstance(sub.topic, str) else event_info(sub.topic).name
            event_type = None if isinstance(sub.topic, str) else sub.topic
            out.append(
                Endpoint(
                    "subscription",
                    topic,
                    sub.handler,
                    event_type=event_type or event_type_of(sub.handler),
                    publish_to=sub.publish_to,
                    group=sub.options.get("group"),
                )
            )
        for entry in self._rpc.values():
            for method, func in entry.methods.items():
                topic = f"{RPC_TOPIC_PREFIX}.{entry.name}"
                out.append(Endpoint("rpc", topic, func, method=method))
        for item in self._consumers:
            out.append(Endpoint("consumer", item.queue_name, item.handler))
        for task_item in self._tasks:
            topic = task_item.options.get("topic") or task_item.func.__name__
            out.append(Endpoint("task", topic, task_item.func))
        return out

    def _summary(self) -> str:
        parts = [f"{len(self._subscribers)} subscriptions"]
        if self._rpc:
            parts.append("rpc " + ",".join(self._rpc))
        if self._consumers:
            parts.append("consumers " + ",".join(c.queue_name for c in self._consumers))
        return "; ".join(parts)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"Service({self.name!r}, {state}, {self._summary()})"
