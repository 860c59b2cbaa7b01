"""RemoteQueue: address named peers (nodes) and push messages to them.

A node owns one outbound link per peer (a TCP client of the peer's server) and routes
:meth:`RemoteQueue.send` / :meth:`RemoteQueue.broadcast` through them. It receives through an
optional local :class:`~eventforge.queue.MessageQueue` (typically backed by a started
``TCPServerTransport``) that peers push into. The model is push-only: to pull a result from a
peer, use RPC. A pure sender needs no local queue.

The TCP transport is resolved through the plugin registry when the first link opens, so
importing this module never imports ``eventforge_tcp``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from eventforge.errors import ConfigurationError, EventforgeError, TransportClosedError
from eventforge.plugins import registry
from eventforge.queue._queue import MessageQueue

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RemoteQueue", "UnknownPeerError"]

H = TypeVar("H", bound=Callable[..., Any])

SOURCE_HEADER = "source_node"
"""Header naming the sending node on every message a RemoteQueue sends."""


class UnknownPeerError(EventforgeError, LookupError):
    """``send`` / ``disconnect`` named a node this RemoteQueue has no link to."""

    def __init__(self, node_id: str, owner: str, peers: list[str]) -> None:
        listed = ", ".join(peers) if peers else "(none)"
        super().__init__(
            f"node {owner!r} has no link to peer {node_id!r}; connected peers: {listed}. "
            f"Call connect({node_id!r}, host, port) first"
        )
        self.node_id = node_id
        self.peers = tuple(peers)


class RemoteQueue:
    """A named node that pushes to named peers and receives on an optional local queue.

    ``transport`` names the plugin used for outbound links (``"tcp"``); ``link_options`` are
    passed to its client constructor for every link (for example ``token=`` or
    ``ssl_context=``). Every message sent carries the header ``source_node`` = this node's id
    (an explicit header of the same name wins).
    """

    def __init__(
        self,
        node_id: str,
        *,
        local: MessageQueue | None = None,
        transport: str = "tcp",
        **link_options: Any,
    ) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise ConfigurationError(f"node_id must be a non-empty string, got {node_id!r}")
        if local is not None and not isinstance(local, MessageQueue):
            raise ConfigurationError(
                f"local must be a MessageQueue (the queue this node receives on), got "
                f"{type(local).__name__}",
                key="local",
            )
        self.node_id = node_id
        self.local = local
        self._transport_name = transport
        self._link_options = link_options
        self._links: dict[str, MessageQueue] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- links -------------------------------------------------------------------------------

    def connect(self, node_id: str, host: str, port: int, **options: Any) -> None:
        """Open (and own) a link to peer ``node_id`` at ``host:port``; replaces an older link.

        Raises the transport's error when the peer cannot be reached or refuses the link.
        """
        self._check_open()
        if not isinstance(node_id, str) or not node_id:
            raise ConfigurationError(f"peer node_id must be a non-empty string, got {node_id!r}")

        reg = registry()
        factory = reg.load(reg.transport(self._transport_name))
        transport = factory(host, port, **{**self._link_options, **options})
        transport.connect()
        link = MessageQueue(transport=transport)
        with self._lock:
            closed = self._closed
            old = None if closed else self._links.get(node_id)
            if not closed:
                self._links[node_id] = link
        if closed:
            # close() ran while the link was opening: it never saw this one.
            link.close()
            self._check_open()
        if old is not None:
            old.close()

    def disconnect(self, node_id: str) -> bool:
        """Close the link to ``node_id``; return whether there was one."""
        with self._lock:
            link = self._links.pop(node_id, None)
        if link is None:
            return False
        link.close()
        return True

    @property
    def peers(self) -> list[str]:
        """The ids of the peers this node has a link to, in connection order."""
        with self._lock:
            return list(self._links)

    # -- sending -----------------------------------------------------------------------------

    def send(self, node_id: str, topic: str, payload: Any = None, **headers: Any) -> str:
        """Push a message to one peer; return its message id."""
        self._check_open()
        with self._lock:
            link = self._links.get(node_id)
            peers = list(self._links)
        if link is None:
            raise UnknownPeerError(node_id, self.node_id, peers)
        return link.publish(topic, payload, **{SOURCE_HEADER: self.node_id, **headers})

    def broadcast(self, topic: str, payload: Any = None, **headers: Any) -> dict[str, str]:
        """Push a message to every connected peer; return ``{node_id: message_id}``."""
        self._check_open()
        with self._lock:
            links = list(self._links.items())
        merged = {SOURCE_HEADER: self.node_id, **headers}
        return {node: link.publish(topic, payload, **merged) for node, link in links}

    # -- receiving ---------------------------------------------------------------------------

    def subscribe(self, topic: str, handler: Callable[..., Any], **options: Any) -> str:
        """Handle messages that peers push to this node's local queue; return a handler id."""
        return self._local_queue().subscribe(topic, handler, **options)

    @overload
    def on(self, topic: str, handler: None = None, **options: Any) -> Callable[[H], H]: ...

    @overload
    def on(self, topic: str, handler: H, **options: Any) -> H: ...

    def on(self, topic: str, handler: H | None = None, **options: Any) -> H | Callable[[H], H]:
        """Decorator form of :meth:`subscribe` (also ``on(topic, fn)``)."""
        return self._local_queue().on(topic, handler, **options)

    def unsubscribe(self, handler_id: str) -> bool:
        """Stop a local subscription; return whether it existed."""
        return self._local_queue().unsubscribe(handler_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close every peer link and the local queue (and so its transport). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links = list(self._links.values())
            self._links.clear()
        for link in links:
            link.close()
        if self.local is not None:
            self.local.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"peers={self.peers}"
        receives = "receives" if self.local is not None else "send-only"
        return f"RemoteQueue({self.node_id!r}, {receives}, {state})"

    def _local_queue(self) -> MessageQueue:
        if self.local is None:
            raise ConfigurationError(
                f"node {self.node_id!r} has no local queue, so it cannot receive: pass "
                "local=MessageQueue(transport=TCPServerTransport(host, port).start()) to "
                "RemoteQueue, and let peers connect() to that port",
                key="local",
            )
        return self.local

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"RemoteQueue {self.node_id!r} is closed")
