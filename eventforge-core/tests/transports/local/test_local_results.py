"""local:// keeps task results in its SQLite store: the conformance suite, with every client a
new LocalTransport on the directory, and a worker process whose results this process reads."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventforge.testing.results_conformance import ResultStoreConformance, StoreFactory
from eventforge.testing.results_processes import ResultsAcrossProcesses
from eventforge.transports.local import LocalTransport


class TestLocalResultStore(ResultStoreConformance):
    short_ttl = 0.2
    expiry_slack = 0.5

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[StoreFactory]:
        opened: list[LocalTransport] = []

        def make() -> object:
            opened.append(LocalTransport(tmp_path))
            return opened[-1].result_store()

        yield make  # type: ignore[misc]
        for transport in opened:
            transport.close()


class TestLocalResultsAcrossProcesses(ResultsAcrossProcesses):
    @pytest.fixture
    def results_url(self, tmp_path: Path) -> str:
        return f"local://{tmp_path / 'store'}"


def test_the_sweep_deletes_expired_results(tmp_path: Path) -> None:
    """Expired records read as absent at once, and the sweep removes their rows."""
    transport = LocalTransport(tmp_path)
    try:
        store = transport.result_store()
        store.put("short", b"x", ttl=0.01, final=True)
        store.put("long", b"y", ttl=60, final=True)
        time.sleep(0.02)
        assert store.get("short") is None
        transport.sweep()
        with contextlib.closing(sqlite3.connect(tmp_path / "eventforge.db")) as db:
            assert db.execute("SELECT key FROM results").fetchall() == [("long",)]
    finally:
        transport.close()
