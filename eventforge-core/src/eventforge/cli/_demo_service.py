"""The service that ``eventforge demo`` runs with ``eventforge run`` to show its health."""

from __future__ import annotations

from eventforge.message import Message
from eventforge.service import Service

svc = Service("demo-service", probe_interval=0.2)


@svc.on("demo.orders.*")
def on_order(message: Message) -> None:
    """Record an order."""


@svc.rpc()
def square(x: int) -> int:
    """Return ``x * x``."""
    return x * x


@svc.consumer("demo.jobs")
def job(message: Message) -> None:
    """Do one job."""
