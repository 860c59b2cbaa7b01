"""The public names: ``eventforge.transports.tcp`` resolves through the plugin registry, and
a server on a free port carries a MessageQueue as the README's snippet shows."""

from __future__ import annotations

import eventforge
from eventforge.testing.conformance import Collector
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport


def test_the_public_import_path_resolves_through_the_registry() -> None:
    from eventforge.transports.tcp import TCPClientTransport as Client
    from eventforge.transports.tcp import TCPServerTransport as Server

    assert Client is TCPClientTransport
    assert Server is TCPServerTransport
    entry = eventforge.registry().transport("tcps://host:1")
    assert entry.spec.name == "tcp"


def test_a_started_server_carries_a_message_queue_on_a_free_port() -> None:
    """The seed's 'swap the transport' lines, on a free port instead of 9090."""
    from eventforge import MessageQueue
    from eventforge.transports.tcp import TCPServerTransport

    local = MessageQueue()
    transport = TCPServerTransport(host="127.0.0.1", port=0)
    transport.start()
    networked = MessageQueue(transport=transport)
    got = Collector()
    networked.subscribe("seed.tcp", got)
    networked.publish("seed.tcp", {"ok": True})
    assert got.wait_for_count(1, 5.0)
    networked.close()
    local.close()


def test_the_plugin_record_and_the_classes_declare_the_same_capabilities() -> None:
    record = eventforge.registry().transport("tcp").spec
    assert record.capabilities == TCPClientTransport.capabilities
    assert record.capabilities == TCPServerTransport.capabilities
