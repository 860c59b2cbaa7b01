"""Run every benchmark scenario beside its anchor and print the ratios.

    ./scripts/bench.sh                 # everything (several minutes)
    ./scripts/bench.sh --quick         # a fast smoke pass
    ./scripts/bench.sh --only tcp,redis --json results.json

Each ``benchmarks/bench_<area>.py`` exposes ``run(quick: bool) -> list[dict]``; a row carries the
eventforge figure, the anchor measured in the same run, the ratio and the goal. Benchmarks
report; they never fail on a slow figure (exit code 0 unless a scenario crashed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def discover(only: set[str] | None) -> list[Path]:
    """The benchmark modules, optionally filtered by area name (``bench_<area>.py``)."""
    paths = sorted(HERE.glob("bench_*.py"))
    if only:
        paths = [p for p in paths if p.stem.removeprefix("bench_") in only]
    return paths


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def table(rows: list[dict[str, Any]]) -> str:
    """Render the rows as a Markdown table (also what docs/performance.md records)."""
    lines = [
        "| area | scenario | eventforge | anchor | anchor value | unit | ratio | goal |",
        "|---|---|---:|---|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['area']} | {r['scenario']} | {fmt(r['eventforge'])} | {r['anchor']} | "
            f"{fmt(r['anchor_value'])} | {r['unit']} | {r['ratio']:.2f}x | {r.get('goal', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated areas, e.g. inprocess,tcp")
    parser.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args(argv)
    only = {a.strip() for a in args.only.split(",") if a.strip()} or None
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for path in discover(only):
        area = path.stem.removeprefix("bench_")
        print(f"== {area} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            for row in load(path).run(args.quick):
                rows.append({"area": area, **row})
        except Exception:
            failures.append(area)
            traceback.print_exc()
        print(f"   {area} took {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print(table(rows))
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": args.quick,
        "rows": rows,
        "failed": failures,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    if failures:
        print(f"scenarios that crashed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
