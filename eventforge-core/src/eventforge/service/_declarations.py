"""The records a service keeps of what was declared on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventforge.rpc import RPCServer
from eventforge.workqueue import Consumer, WorkQueue

from .health import Tracker

__all__ = ["Endpoint"]


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


@dataclass
class _Consumer:
    queue_name: str
    handler: Callable[..., Any]
    concurrency: int
    options: dict[str, Any]
    tracker: Tracker
    work_queue: WorkQueue | None = None
    consumer: Consumer | None = None


@dataclass
class _Task:
    func: Callable[..., Any]
    options: dict[str, Any]
    bound: Any = None


@dataclass
class _RPCService:
    name: str
    methods: dict[str, Callable[..., Any]] = field(default_factory=dict)
    tracker: Tracker | None = None
    server: RPCServer | None = None
