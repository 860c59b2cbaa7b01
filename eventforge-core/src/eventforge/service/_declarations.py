"""The records a service keeps of what was declared on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from eventforge.events import event_info, event_type_of
from eventforge.rpc import RPC_TOPIC_PREFIX, RPCServer
from eventforge.service.health import Tracker
from eventforge.workqueue import Consumer, WorkQueue

__all__ = ["Endpoint", "describe"]


@dataclass(frozen=True)
class Endpoint:
    """One declaration of a service: a subscription, an RPC method, a consumer or a task.

    ``address`` is the topic pattern, RPC topic or work-queue name; ``event_type`` the typed
    event the handler receives, if any; ``publish_to`` where its return value is published.
    """

    kind: str
    address: str
    handler: Callable[..., Any]
    event_type: type | None = None
    publish_to: str | None = None
    group: str | None = None
    method: str | None = None


@dataclass
class _Subscriber:
    topic: str | type
    handler: Callable[..., Any]
    options: dict[str, Any]
    publish_to: str | None
    tracker: Tracker
    handler_id: str | None = None
    wrapped: Callable[..., Any] | None = None


@dataclass
class _Consumer:
    queue_name: str
    handler: Callable[..., Any]
    concurrency: int
    options: dict[str, Any]
    tracker: Tracker
    work_queue: WorkQueue | None = None
    consumer: Consumer | None = None
    lost: int | None = None


@dataclass
class _Task:
    func: Callable[..., Any]
    options: dict[str, Any]
    bound: Any = None


@dataclass
class _RPCService:
    name: str
    methods: dict[str, Callable[..., Any]] = field(default_factory=dict)
    wrapped: dict[str, Callable[..., Any]] = field(default_factory=dict)
    tracker: Tracker | None = None
    server: RPCServer | None = None


def describe(
    subscribers: Iterable[_Subscriber],
    rpc: Iterable[_RPCService],
    consumers: Iterable[_Consumer],
    tasks: Iterable[_Task],
) -> list[Endpoint]:
    """The endpoints of a service's declarations, in declaration order per kind."""
    out: list[Endpoint] = []
    for sub in subscribers:
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
    for entry in rpc:
        for method, func in entry.methods.items():
            topic = f"{RPC_TOPIC_PREFIX}.{entry.name}"
            out.append(Endpoint("rpc", topic, func, method=method))
    for item in consumers:
        out.append(Endpoint("consumer", item.queue_name, item.handler))
    for task_item in tasks:
        topic = task_item.options.get("topic") or task_item.func.__name__
        out.append(Endpoint("task", topic, task_item.func))
    return out
