"""``Service``: one object that owns an application's handlers, starts them and stops them.

It is composed from the seed API (a :class:`~eventforge.queue.MessageQueue`, one
:class:`~eventforge.rpc.RPCServer` per RPC service name, :class:`~eventforge.workqueue.WorkQueue`
consumers, ``@task``) and adds a start/stop order, draining, and health per subscription.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from eventforge.config import Settings, connect
from eventforge.errors import ConfigurationError
from eventforge.queue import MessageQueue
from eventforge.service._declarations import (
    Endpoint,
    _Consumer,
    _RPCService,
    _Subscriber,
    _Task,
    describe,
)
from eventforge.service._handlers import call_hook
from eventforge.service._lifecycle import run_until_stopped, summary
from eventforge.service._probe import Prober
from eventforge.service._starting import (
    start_consumers,
    start_probes,
    start_rpc,
    start_schedules,
    start_subscribers,
    start_tasks,
)
from eventforge.service._stopping import stop_consumers, stop_rpc, stop_subscribers, stop_tasks
from eventforge.service.health import Tracker, health_report
from eventforge.service.schedule import Cron, Every, Schedule, Scheduler
from eventforge.topics import validate_pattern, validate_topic
from eventforge.transport import Transport
from eventforge.workqueue import Consumer, RetryPolicy, WorkQueue

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
    everything in declaration order, after the startup hooks; :meth:`stop` drains within
    ``drain_timeout`` seconds (consumers finish their items, RPC calls running are answered,
    threaded subscribers handle what waits for them), unsubscribes, then runs the shutdown
    hooks. A subscription with no delivery for ``idle_after`` seconds is reported ``idle``.
    Every ``probe_interval`` seconds (``None``: never) each subscription is probed and its
    own path checked; a probe late by ``probe_timeout`` seconds, or a threaded handler that
    finished nothing for that long while messages wait, makes it ``stalled`` (see
    ``docs/health.md``).
    """

    def __init__(
        self,
        name: str = "service",
        transport: str | Settings | Transport | None = None,
        *,
        queue: MessageQueue | None = None,
        drain_timeout: float = 10.0,
        idle_after: float = 60.0,
        probe_interval: float | None = 5.0,
        probe_timeout: float | None = None,
    ) -> None:
        if queue is not None and transport is not None:
            raise ConfigurationError(
                "pass either transport= or queue= to Service, not both (the queue already has "
                "a transport)",
                key="transport",
            )
        if drain_timeout < 0 or idle_after <= 0:
            raise ValueError("drain_timeout must be >= 0 and idle_after > 0 (seconds)")
        if probe_interval is not None and probe_interval <= 0:
            raise ValueError(f"probe_interval must be > 0 seconds or None, got {probe_interval}")
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout or (
            max(1.0, 2 * probe_interval) if probe_interval else None
        )
        self._prober: Prober | None = None
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
        self._schedules: list[Schedule] = []
        self._scheduler: Scheduler | None = None
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

    def every(
        self,
        interval: float | timedelta,
        *,
        name: str | None = None,
        offset: float = 0.0,
        missed: str = "skip",
        catch_up: float = 3600.0,
        max_catch_up: int = 100,
    ) -> Callable[[F], F]:
        """Decorator: call the function every ``interval`` (seconds or a ``timedelta``), once
        per tick across every worker of the service (see :mod:`eventforge.service.schedule`).

        Ticks fall on multiples of ``interval`` since the Unix epoch, plus ``offset``. The
        function takes no argument or a :class:`~eventforge.service.schedule.Tick`.
        ``missed`` (``"skip"``, ``"once"``, ``"all"``) decides what a starting worker does
        about ticks of the last ``catch_up`` seconds that nobody fired.
        """
        trigger = Every(interval, offset)
        return self._schedule(trigger, name, missed, catch_up, max_catch_up)

    def cron(
        self,
        expression: str,
        *,
        tz: str = "UTC",
        name: str | None = None,
        missed: str = "skip",
        catch_up: float = 3600.0,
        max_catch_up: int = 100,
    ) -> Callable[[F], F]:
        """Decorator: call the function at the times of a cron ``expression`` in time zone
        ``tz`` (DST handled by ``croniter``: ``pip install 'eventforge-core[cron]'``), once
        per tick across every worker; ``missed`` and ``catch_up`` as for :meth:`every`."""
        return self._schedule(Cron(expression, tz), name, missed, catch_up, max_catch_up)

    def _schedule(
        self, trigger: Every | Cron, name: str | None, missed: str, catch_up: float, most: int
    ) -> Callable[[F], F]:
        def declare(func: F) -> F:
            label = str(name or getattr(func, "__name__", ""))
            try:
                validate_topic(label)
            except ValueError:
                raise ConfigurationError(
                    f"a schedule needs a name made of topic segments; {label!r} is not one: "
                    "pass name='...'",
                    key="name",
                ) from None
            schedule = Schedule(label, trigger, func, missed, catch_up, max_catch_up=most)
            with self._lock:
                self._check_not_running()
                if any(s.name == schedule.name for s in self._schedules):
                    raise ValueError(f"schedule {schedule.name!r} is declared twice; name= it")
                self._schedules.append(schedule)
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
        work_queue = self._started(queue_name).work_queue
        assert work_queue is not None
        return work_queue

    def consumer_of(self, queue_name: str) -> Consumer:
        """The running :class:`~eventforge.workqueue.Consumer` of ``queue_name``."""
        consumer = self._started(queue_name).consumer
        assert consumer is not None
        return consumer

    def _started(self, queue_name: str) -> _Consumer:
        for item in self._consumers:
            if item.queue_name == queue_name and item.consumer is not None:
                return item
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
            start_subscribers(self.queue, self._subscribers)
            start_rpc(self.queue, self._rpc.values())
            start_consumers(self.queue, self._consumers)
            if self.probe_interval is not None and self.probe_timeout is not None:
                self._prober = start_probes(
                    Prober(
                        self.queue,
                        self.name,
                        interval=self.probe_interval,
                        timeout=self.probe_timeout,
                    ),
                    self._subscribers,
                    self._rpc.values(),
                    self._consumers,
                )
            start_tasks(self.queue, self._tasks)
            if self._schedules:
                self._scheduler = start_schedules(self.name, self.queue, self._schedules)
        except BaseException:
            self.stop()
            raise
        log.info("service %r started: %s", self.name, self._summary())

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop everything (``timeout`` defaults to ``drain_timeout``), then run the
        shutdown hooks; the queue is closed if the service built it. Idempotent."""
        deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
        with self._lock:
            if not self._running:
                return
        if self._scheduler is not None:
            self._scheduler.stop(timeout=max(0.0, deadline - time.monotonic()))
            self._scheduler = None
        if self._prober is not None:
            self._prober.stop()
            self._prober = None
        stop_consumers(self._consumers, deadline)
        stop_rpc(self._rpc.values(), deadline)
        stop_tasks(self._tasks)
        stop_subscribers(self._queue, self._subscribers, deadline)
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
        run_until_stopped(
            self.name,
            self.start,
            self.stop,
            self._stop_requested,
            install_signals=install_signals,
            on_ready=on_ready,
        )

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- health -----------------------------------------------------------------------------

    def trackers(self) -> list[Tracker]:
        """Every subscription's tracker, in declaration order."""
        rpc = [e.tracker for e in self._rpc.values() if e.tracker is not None]
        consumers = [c.tracker for c in self._consumers]
        schedules = [s.tracker for s in self._schedules]
        return [s.tracker for s in self._subscribers] + rpc + consumers + schedules

    def live(self) -> bool:
        """Whether the service is running and its queue is open."""
        return self._running and self._queue is not None and not self._queue.closed

    def health(self) -> dict[str, Any]:
        """Every subscription with its state, backlog and counters, plus readiness."""
        queue = self._queue if self._queue is not None and not self._queue.closed else None
        return health_report(
            self.name,
            self.trackers(),
            queue_stats=queue.stats if queue is not None else {},
            idle_after=self.idle_after,
            running=self._running,
            live=self.live(),
        )

    def ready(self) -> tuple[bool, list[str]]:
        """Whether every required subscription is ``active`` or ``idle``; else the reasons."""
        report = self.health()
        return not report["reasons"], list(report["reasons"])

    def endpoints(self) -> list[Endpoint]:
        """What the service declares, in declaration order (for documents such as AsyncAPI)."""
        return describe(self._subscribers, self._rpc.values(), self._consumers, self._tasks)

    @property
    def prober(self) -> Prober | None:
        """What sends the end-to-end probes while the service runs (``None`` when off)."""
        return self._prober

    def _summary(self) -> str:
        return summary(self._subscribers, self._rpc, self._consumers, self._schedules)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"Service({self.name!r}, {state}, {self._summary()})"
