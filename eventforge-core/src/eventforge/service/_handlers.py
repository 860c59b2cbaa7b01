"""Wrapping a service's handlers so each delivery is recorded on its subscription's tracker."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from eventforge._loop import run_sync
from eventforge.queue import MessageQueue
from eventforge.workqueue import WorkQueue

from .health import HealthState, Tracker

__all__ = ["attribute", "call_hook", "observed", "pending", "publishers", "unready"]

Publish = Callable[[Any], Any]


def observed(
    handler: Callable[..., Any],
    tracker: Tracker,
    publish: Publish | None = None,
    publish_async: Callable[[Any], Any] | None = None,
) -> Callable[..., Any]:
    """Return ``handler`` wrapped to record deliveries and failures on ``tracker``.

    The wrapper keeps the handler's signature and annotations (``functools.wraps``), so a
    typed-event handler is still recognised by its first parameter. With ``publish``, a
    return value other than ``None`` is published (the service's ``publish_to=``).
    """
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
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

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
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


def unready(subscriptions: list[dict[str, Any]]) -> list[str]:
    return [
        f"{s['kind']} {s['name']} on {s['target']!r} is {s['state']}"
        + (f" ({s['last_error']})" if s["last_error"] else "")
        for s in subscriptions
        if s["required"] and s["state"] not in (HealthState.ACTIVE.value, HealthState.IDLE.value)
    ]
