"""Every installed transport's plugin record declares what its class declares.

``eventforge plugins`` and configuration-time checks read the records without importing the
transports, so a record that drifts from its class would misinform users.
"""

from __future__ import annotations

import pytest
from eventforge.plugins import TransportSpec
from eventforge.plugins._registry import Entry, registry


def _transport_entries() -> list[Entry]:
    return [e for e in registry().entries("transport") if isinstance(e.spec, TransportSpec)]


@pytest.mark.parametrize("entry", _transport_entries(), ids=lambda e: e.spec.name)
def test_record_capabilities_match_the_class(entry: Entry) -> None:
    assert isinstance(entry.spec, TransportSpec)
    cls = registry().load(entry)
    assert frozenset(entry.spec.capabilities) == frozenset(cls.capabilities)


def test_every_distribution_is_covered() -> None:
    names = {e.spec.name for e in _transport_entries()}
    assert {"memory", "tcp", "redis", "nats"} <= names
