"""Every benchmark module runs in quick mode and returns well-formed rows (no timing checked)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from eventforge.testing.brokers import BrokerUnavailable
from eventforge.testing.pytest_plugin import require_brokers

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
MODULES = sorted(BENCH.glob("bench_*.py"))
KEYS = {"scenario", "eventforge", "anchor", "anchor_value", "unit", "ratio", "goal"}


def test_there_are_benchmarks():
    assert MODULES, "benchmarks/ has no bench_*.py modules"


@pytest.mark.slow
@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_benchmark_quick_run(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the modules share benchmarks/_common.py
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        rows = module.run(True)
    except BrokerUnavailable as exc:  # a broker the benchmark needs is not installed here
        if require_brokers():
            pytest.fail(f"broker required (EVENTFORGE_REQUIRE_BROKERS=1) but unavailable: {exc}")
        pytest.skip(f"broker unavailable: {exc}")
    assert rows, f"{path.name} returned no rows"
    for row in rows:
        missing = KEYS - set(row)
        assert not missing, f"{path.name}: row {row.get('scenario')!r} lacks {sorted(missing)}"
        assert row["eventforge"] > 0
        assert row["anchor_value"] > 0
        # The ratio is always eventforge / anchor; for latencies (higher_is_better=False) a
        # ratio below 1 is the good side.
        assert math.isclose(row["ratio"], row["eventforge"] / row["anchor_value"], rel_tol=0.05), (
            f"{path.name}: ratio of {row['scenario']!r} does not match its figures"
        )
