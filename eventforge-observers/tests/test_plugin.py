"""eventforge-observers registers its observers by name, without importing them."""

from __future__ import annotations

import json
import subprocess
import sys

NAMES = {"meter", "timing", "memory", "cpu", "metrics", "logging", "otel", "prometheus", "logfire"}


def run(code: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_eventforge_plugins_lists_the_observers_with_their_distribution() -> None:
    out = run("import sys; from eventforge.cli import main; sys.exit(main())", "plugins", "--json")
    rows = [row for row in json.loads(out) if row["kind"] == "observer"]
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) >= NAMES
    for name in NAMES:
        assert by_name[name]["distribution"] == "eventforge-observers"
    assert by_name["timing"]["target"] == "eventforge_observers.meters:TimingMeter"
    assert by_name["timing"]["status"] == "ok"
    dispatchers = {row["name"] for row in json.loads(out) if row["kind"] == "dispatcher"}
    assert {"broadcast", "round_robin", "concurrent", "least_loaded"} <= dispatchers


def test_listing_imports_no_observer_module_and_no_optional_dependency() -> None:
    code = """
import sys
from eventforge import registry
reg = registry()
assert "timing" in reg.names("observer")
heavy = [m for m in sys.modules if m.startswith(("opentelemetry", "prometheus_client",
         "logfire", "eventforge_observers.meters", "eventforge_observers.otel"))]
print(heavy)
"""
    assert run(code).strip() == "[]"


def test_seed_import_path_resolves_through_the_registry() -> None:
    code = """
from eventforge import task, TimingMeter, MetricsMeter, observe
import eventforge_observers.meters as meters
assert TimingMeter is meters.TimingMeter and MetricsMeter is meters.MetricsMeter
assert callable(observe) and callable(task)
print("ok")
"""
    assert run(code).strip() == "ok"
