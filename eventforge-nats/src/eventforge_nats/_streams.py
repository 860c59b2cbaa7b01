"""The JetStream layout of one work queue: its names, and creating what is missing.

Per queue ``name`` (``<token>`` is ``name`` made safe for stream names):

* stream ``EF_WQ_<token>`` on subject ``eventforge.wq.<token>``: file storage, work-queue
  retention (an acked item is deleted), a ``duplicate_window`` for publisher retries; on a
  server that keeps message schedules also ``allow_msg_schedules`` and the subjects
  ``eventforge.wq.<token>.due.*`` of delayed items (:mod:`eventforge_nats._schedules`);
* durable pull consumer ``eventforge``: explicit ack, ``ack_wait`` (an item whose consumer died
  is redelivered after it), no ``max_deliver`` (the retry policy decides);
* stream ``EF_DLQ_<token>`` on subject ``eventforge.dlq.<token>``: the dead letters we own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventforge.errors import TransportError, UnsupportedCapabilityError

from ._schedules import due_subjects

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

__all__ = ["CONSUMER", "QueueLayout", "queue_names", "setup_error"]

CONSUMER = "eventforge"
"""The durable consumer every process of a queue pulls from (they compete for items)."""


def queue_names(name: str) -> dict[str, str]:
    """Stream, subject and dead-letter names for the queue ``name``."""
    token = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if token != name:
        token = f"{token}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return {
        "stream": f"EF_WQ_{token}",
        "subject": f"eventforge.wq.{token}",
        "dlq_stream": f"EF_DLQ_{token}",
        "dlq_subject": f"eventforge.dlq.{token}",
    }


@dataclass(frozen=True)
class QueueLayout:
    """The streams and the durable consumer of one work queue, and their configuration."""

    name: str
    stream: str
    subject: str
    dlq_stream: str
    dlq_subject: str
    ack_wait: float
    duplicate_window: float
    max_ack_pending: int
    schedules: bool = False
    """Whether a stream made here keeps message schedules (the server can)."""

    @classmethod
    def of(
        cls,
        name: str,
        *,
        ack_wait: float,
        duplicate_window: float,
        max_ack_pending: int,
        schedules: bool = False,
    ) -> QueueLayout:
        """The layout of the queue ``name``."""
        return cls(
            name,
            **queue_names(name),
            ack_wait=ack_wait,
            duplicate_window=duplicate_window,
            max_ack_pending=max_ack_pending,
            schedules=schedules,
        )

    @property
    def pull_subject(self) -> str:
        """Where pull requests for the consumer are sent."""
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{CONSUMER}"

    async def ensure(self, js: JetStreamContext) -> bool:
        """Create the streams and the consumer when missing; return whether any was missing."""
        import nats.js.errors
        from nats.js.api import (
            AckPolicy,
            ConsumerConfig,
            RetentionPolicy,
            StorageType,
            StreamConfig,
        )

        created = False
        queue_subjects = [self.subject]
        if self.schedules:
            queue_subjects.append(due_subjects(self.subject))
        for stream, subjects, retention, schedules in (
            (self.stream, queue_subjects, RetentionPolicy.WORK_QUEUE, self.schedules or None),
            (self.dlq_stream, [self.dlq_subject], RetentionPolicy.LIMITS, None),
        ):
            try:
                await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(
                    StreamConfig(
                        name=stream,
                        subjects=subjects,
                        retention=retention,
                        storage=StorageType.FILE,
                        duplicate_window=self.duplicate_window,
                        allow_msg_schedules=schedules,
                    )
                )
                created = True
        try:
            await js.consumer_info(self.stream, CONSUMER)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=CONSUMER,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait,
                    max_deliver=-1,
                    max_ack_pending=self.max_ack_pending,
                    filter_subject=self.subject,
                ),
            )
            created = True
        return created


def setup_error(name: str, exc: BaseException) -> BaseException:
    """What to raise when setting up the queue ``name`` failed with ``exc`` (nats-py's)."""
    import nats.errors
    import nats.js.errors

    if isinstance(exc, (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)):
        return UnsupportedCapabilityError(
            f"work queue {name!r} needs JetStream, which this NATS server does not offer; start "
            "nats-server with JetStream enabled (-js) or use another transport",
            transport="nats",
            capability="durable",
        )
    if isinstance(exc, (nats.errors.Error, TimeoutError)):
        return TransportError(
            f"could not set up the JetStream work queue {name!r}: {type(exc).__name__}: {exc}"
        )
    return exc
