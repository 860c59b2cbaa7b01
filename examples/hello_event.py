"""Typed events with a listener class and a session-carrying pipeline.

An event is a dataclass (or pydantic model) marked with ``@event()``; a listener class marked
with ``@event_listener`` receives it validated. A middleware carries the publisher's session id
in a header and restores it around the listener, whatever the transport.

Run: ``python examples/hello_event.py [transport-url]`` (default: in-process).
"""

from __future__ import annotations

import contextvars
import sys
import threading
from dataclasses import dataclass

from eventforge import MessageQueue, connect
from eventforge.events import EventListener, event, event_listener
from eventforge.middleware import ContextHeader

session: contextvars.ContextVar[str] = contextvars.ContextVar("session")


@event()
@dataclass
class HelloEvent:
    world: str


@event_listener(HelloEvent)
class HelloEventListener(EventListener[HelloEvent]):
    def __init__(self) -> None:
        self.received = threading.Event()

    def on(self, event: HelloEvent) -> None:
        print(f"hello {event.world} (session {session.get('none')})")
        self.received.set()


def main(url: str = "memory://") -> None:
    pipeline = [ContextHeader("session", session)]
    with MessageQueue(connect(url), middleware=pipeline) as queue:
        listener = HelloEventListener()
        queue.listen(listener)
        session.set("s-42")
        for _ in range(50):  # network transports: until the subscription is live
            queue.publish(HelloEvent("world"))
            if listener.received.wait(0.1):
                break


if __name__ == "__main__":
    main(*sys.argv[1:2])
