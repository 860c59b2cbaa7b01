"""RemoteQueue review: a connect racing close() leaves no open link behind."""

from __future__ import annotations

from typing import Any

import eventforge.remote as remote_module
import pytest
from eventforge import MessageQueue, RemoteQueue
from eventforge.errors import TransportClosedError

pytest.importorskip("eventforge_tcp")

from eventforge.transports.tcp import TCPServerTransport


def test_connect_racing_close_closes_the_new_link(monkeypatch: pytest.MonkeyPatch) -> None:
    server = TCPServerTransport(host="127.0.0.1", port=0)
    server.start()
    node = RemoteQueue("a")
    links: list[MessageQueue] = []

    def link_while_closing(*args: Any, **kwargs: Any) -> MessageQueue:
        node.close()  # another thread closes the node while this connect is under way
        link = MessageQueue(*args, **kwargs)
        links.append(link)
        return link

    monkeypatch.setattr(remote_module, "MessageQueue", link_while_closing)
    try:
        with pytest.raises(TransportClosedError):
            node.connect("b", "127.0.0.1", server.port)
        assert node.peers == []
        assert len(links) == 1
        assert links[0].closed, "the link opened during close() was left open"
    finally:
        for link in links:
            link.close()
        server.close()
