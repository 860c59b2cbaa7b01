"""Wrapping a service's handlers so each delivery is recorded on its subscription's tracker."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.service.health import Tracker
from eventforge.topics import topic_matches
from eventforge.transport import run_sync
from eventforge.workqueue import Consumer, WorkQueue

__all__ = ["attribute", "call_hook", "consuming", "observed", "pending", "publishers"]

Publish = Callable[[Any], Any]


PROBE_PREFIX = "_eventforge.probe"
"""Topics the service's end-to-end probes travel on (never handed to a service's handlers)."""


def _is_probe(args: tuple[Any, ...]) -> bool:
    return bool(args) and isinstance(args[0], Message) and args[0].topic.startswith(PROBE_PREFIX)


def observed(
    handler: Callable[..., Any],
    tracker: Tracker,
    publish: Publish | None = None,
    publish_async: Callable[[Any], Any] | None = None,
    *,
    pattern: str | None = None,
    single: bool = False,
) -> Callable[..., Any]:
    """Return ``handler`` wrapped to record deliveries and failures on ``tracker``.

    The wrapper keeps the handler's signature and annotations (``functools.wraps``), so a
    typed-event handler is still recognised by its first parameter. With ``publish``, a
    return value other than ``None`` is published (the service's ``publish_to=``). When
    ``pattern`` can match the probes' topics (``**``), probe messages are skipped.
    ``single=True`` (a subscription or consumer handler, called with one message) takes a
    leaner path: one counter bump per delivery.
    """
    skip_probes = pattern is not None and topic_matches(pattern, f"{PROBE_PREFIX}.x.y.s0")
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            if skip_probes and _is_probe(args):
                return None
            tracker.delivered_now()
            try:
                result = await handler(*args, **kwargs)
            except Exception as exc:
                tracker.failed_now(exc)
                raise
            if publish_async is not None and result is not None:
                await publish_async(result)
            return result

        return run_async

    if not skip_probes and publish is None and single:
        bump = tracker.delivered.bump

        @functools.wraps(handler)
        def deliver(message: Any) -> Any:
            bump()
            try:
                return handler(message)
            except Exception as exc:
                tracker.failed_now(exc)
                raise

        return deliver

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        if skip_probes and _is_probe(args):
            return None
        tracker.delivered_now()
        try:
            result = handler(*args, **kwargs)
        except Exception as exc:
            tracker.failed_now(exc)
            raise
        if publish is not None and result is not None:
            publish(result)
        return result

    return run


def publishers(
    queue: MessageQueue, topic: str | None
) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
    if topic is None:
        return None, None

    def publish(result: Any) -> str:
        return queue.publish(topic, result)

    async def publish_async(result: Any) -> str:
        return await queue.publish_async(topic, result)

    return publish, publish_async


def attribute(obj: object, name: str) -> Callable[[], bool]:
    def read() -> bool:
        return bool(getattr(obj, name))

    return read


def call_hook(hook: Callable[[], Any]) -> None:
    result = hook()
    if inspect.isawaitable(result):
        run_sync(result)


def pending(work_queue: WorkQueue) -> int | None:
    value = work_queue.stats.get("pending")
    return int(value) if isinstance(value, int) else None


def consuming(consumer: Consumer, tracker: Tracker) -> Callable[[], bool]:
    """A liveness check: a consumer is alive while a thread runs and its fetches succeed."""

    def check() -> bool:
        if consumer.fetch_failures:
            tracker.last_error = (
                f"{consumer.fetch_failures} fetches failed in a row: {consumer.last_fetch_error}"
            )
            return False
        return consumer.running

    return check
