"""Turns criterion's results (target/criterion/**/new/estimates.json) into the markdown tables of
BENCHMARKS.md: each contender's time and throughput beside the group's baselines, as ratios.

    python3 benches/report.py            # after `cargo bench -p hornbeam-benches`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "target" / "criterion"
OURS = ("hornbeam", "rust")


def estimates() -> dict[str, dict[str, float]]:
    groups: dict[str, dict[str, float]] = {}
    for est in ROOT.glob("**/new/estimates.json"):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        group = bench["group_id"]
        name = bench["function_id"] or ""
        if bench.get("value_str"):
            group = f"{group}/{bench['value_str']}"
        ns = json.loads(est.read_text())["median"]["point_estimate"]
        thr = bench.get("throughput") or {}
        elems = thr.get("Elements")
        groups.setdefault(group, {})[name] = (ns, elems)
    return groups


def fmt_time(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.1f} ns"


def main() -> None:
    if not ROOT.exists():
        sys.exit("no criterion results: run `cargo bench -p hornbeam-benches` first")
    for group, members in sorted(estimates().items()):
        ours = next((members[n] for n in OURS if n in members), None)
        print(f"\n**{group}**\n")
        print("| contender | median time | throughput | ours vs it |")
        print("|---|---:|---:|---:|")
        for name, (ns, elems) in sorted(members.items(), key=lambda kv: kv[1][0]):
            thr = f"{elems / ns * 1e3:.2f} M/s" if elems else ""
            ratio = f"{ns / ours[0]:.2f}x" if ours and name not in OURS else ""
            print(f"| {name} | {fmt_time(ns)} | {thr} | {ratio} |")


if __name__ == "__main__":
    main()
