#!/usr/bin/env python3
"""Summarise criterion's results (target/criterion) as a Markdown table: the median of every
bench, and for each group that has one bench per transport, each transport's time as a ratio to
the fastest. Ratios are what carry from machine to machine; absolute times do not.

    cargo bench && scripts/bench-summary.py > results/benches/SUMMARY.md
"""
import json
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
TRANSPORTS = ["poll", "longpoll", "stream", "sse", "ws"]


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


rows = {}
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    rows[bench["full_id"]] = json.loads(est.read_text())["median"]["point_estimate"]

if not rows:
    sys.exit(f"no criterion results under {root}: run cargo bench first")

print("| bench | median |")
print("|---|---|")
for name, ns in rows.items():
    print(f"| `{name}` | {fmt(ns)} |")

# Group benches that differ only in the transport's name, then compare within each group.
groups = {}
for name, ns in rows.items():
    parts = name.split("/")
    for i, part in enumerate(parts):
        base = re.sub(r"\(.*\)$", "", part)
        if base in TRANSPORTS:
            key = "/".join(parts[:i] + ["<transport>"] + parts[i + 1:])
            groups.setdefault(key, {})[base] = ns
            break

print()
print("Ratios between transports (time ÷ the fastest transport in the same row; 1.00 = fastest):")
print()
print("| bench | " + " | ".join(TRANSPORTS) + " |")
print("|---|" + "---|" * len(TRANSPORTS))
for key, by_t in groups.items():
    if len(by_t) < 2:
        continue
    best = min(by_t.values())
    cells = [f"{by_t[t] / best:.2f}" if t in by_t else "—" for t in TRANSPORTS]
    print(f"| `{key}` | " + " | ".join(cells) + " |")
