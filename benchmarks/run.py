"""Run every benchmark scenario beside its anchor and print the ratios.

    ./scripts/bench.sh                 # everything (several minutes)
    ./scripts/bench.sh --quick         # a fast smoke pass
    ./scripts/bench.sh --only tcp,redis --json results.json
    ./scripts/bench.sh --only tcp --repeat 3   # median ratio of 3 passes, with its spread

Above the table it prints the machine's own anchors (a loopback TCP ping-pong between two
processes, a ``SimpleQueue`` ping-pong between two threads), so that runs on different machines
can be compared. With ``--repeat N`` every area runs N times, one pass after the other; a row
then reports the median of its N figures and ratios, and the spread (lowest and highest ratio).

Each ``benchmarks/bench_<area>.py`` exposes ``run(quick: bool) -> list[dict]``; a row carries the
eventforge figure, the anchor measured in the same run, the ratio and the goal. Benchmarks
report; they never fail on a slow figure (exit code 0 unless a scenario crashed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _machine import anchors, describe

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
    repeated = any(len(r.get("ratios", ())) > 1 for r in rows)
    spread_head, spread_rule = (" spread |", "---|") if repeated else ("", "")
    lines = [
        "| area | scenario | eventforge | anchor | anchor value | unit | ratio |"
        + spread_head
        + " goal |",
        "|---|---|---:|---|---:|---|---:|" + spread_rule + "---|",
    ]
    for r in rows:
        spread = ""
        if repeated:
            ratios = r.get("ratios") or [r["ratio"]]
            spread = f" {min(ratios):.2f}-{max(ratios):.2f} |"
        lines.append(
            f"| {r['area']} | {r['scenario']} | {fmt(r['eventforge'])} | {r['anchor']} | "
            f"{fmt(r['anchor_value'])} | {r['unit']} | {r['ratio']:.2f}x |{spread} "
            f"{r.get('goal', '')} |"
        )
    return "\n".join(lines)


def combine(passes: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per scenario and anchor: the median of its passes, with every pass's ratio."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rows in passes:
        for r in rows:
            grouped.setdefault((r["area"], r["scenario"], r["anchor"]), []).append(r)
    combined = []
    for same in grouped.values():
        ratios = [r["ratio"] for r in same]
        combined.append(
            {
                **same[0],
                "eventforge": statistics.median(r["eventforge"] for r in same),
                "anchor_value": statistics.median(r["anchor_value"] for r in same),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
            }
        )
    return combined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated areas, e.g. inprocess,tcp")
    parser.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    parser.add_argument(
        "--repeat", type=int, default=1, help="passes per area; rows report the median ratio"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, not {args.repeat}")
    only = {a.strip() for a in args.only.split(",") if a.strip()} or None
    machine = anchors(args.quick)
    print(describe(machine), flush=True)
    passes: list[list[dict[str, Any]]] = [[] for _ in range(args.repeat)]
    failures: list[str] = []
    for path in discover(only):
        area = path.stem.removeprefix("bench_")
        module = load(path)
        for index in range(args.repeat):
            label = f" (pass {index + 1} of {args.repeat})" if args.repeat > 1 else ""
            print(f"== {area}{label} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                for row in module.run(args.quick):
                    passes[index].append({"area": area, **row})
            except Exception:
                failures.append(area)
                traceback.print_exc()
                break
            print(f"   {area} took {time.perf_counter() - started:.1f}s", file=sys.stderr)
    rows = combine(passes)
    print(table(rows))
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": args.quick,
        "repeat": args.repeat,
        "machine_anchors": machine,
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
