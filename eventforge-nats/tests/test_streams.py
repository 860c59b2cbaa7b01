"""The JetStream layout of a work queue: names safe for streams, and a server without JetStream
refused at once."""

from __future__ import annotations

from typing import Any

import pytest
from eventforge.errors import UnsupportedCapabilityError
from eventforge.workqueue import RetryPolicy
from eventforge_nats._streams import queue_names
from eventforge_nats.transport import NatsTransport


def test_queue_names_are_safe_for_streams_and_never_collide() -> None:
    assert queue_names("invoices") == {
        "stream": "EF_WQ_invoices",
        "subject": "eventforge.wq.invoices",
        "dlq_stream": "EF_DLQ_invoices",
        "dlq_subject": "eventforge.dlq.invoices",
    }
    dotted, underscored = queue_names("a.b")["stream"], queue_names("a_b")["stream"]
    assert dotted.startswith("EF_WQ_a_b_")
    assert dotted != underscored  # a name made safe carries a hash of the original


@pytest.mark.broker
def test_work_queue_without_jetstream_is_refused_clearly(nats_server_factory: Any) -> None:
    server = nats_server_factory(jetstream=False)
    transport = NatsTransport(server.url)
    try:
        with pytest.raises(UnsupportedCapabilityError, match="JetStream"):
            transport.work_queue_backend("no-js", RetryPolicy())
    finally:
        transport.close()
