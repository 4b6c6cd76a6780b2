#!/usr/bin/env python3
"""Summarise criterion's results as Markdown: the median of every bench, and for each group with
one bench per transport, each transport's time as a ratio to the fastest. Ratios are what carry
from machine to machine; absolute times do not.

    cargo bench && scripts/bench-summary.py                      # target/criterion
    scripts/bench-summary.py RUN1_DIR RUN2_DIR                   # several runs side by side

With several runs, medians come from the first, and each ratio cell shows every run's ratio and
the spread (largest ÷ smallest ratio across runs), so a reader sees how well a rerun reproduces.
"""
import json
import pathlib
import re
import sys

TRANSPORTS = ["poll", "longpoll", "stream", "sse", "ws"]


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def medians(root):
    rows = {}
    for est in sorted(root.glob("**/new/estimates.json")):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        rows[bench["full_id"]] = json.loads(est.read_text())["median"]["point_estimate"]
    if not rows:
        sys.exit(f"no criterion results under {root}: run cargo bench first")
    return rows


def ratios(rows):
    """{group with <transport>: {transport: time / fastest}}"""
    groups = {}
    for name, ns in rows.items():
        parts = name.split("/")
        for i, part in enumerate(parts):
            base = re.sub(r"\(.*\)$", "", part)
            if base in TRANSPORTS:
                key = "/".join(parts[:i] + ["<transport>"] + parts[i + 1:])
                groups.setdefault(key, {})[base] = ns
                break
    out = {}
    for key, by_t in groups.items():
        if len(by_t) >= 2:
            best = min(by_t.values())
            out[key] = {t: v / best for t, v in by_t.items()}
    return out


runs = [pathlib.Path(a) for a in sys.argv[1:]] or [pathlib.Path("target/criterion")]
all_rows = [medians(r) for r in runs]
all_ratios = [ratios(r) for r in all_rows]

print("| bench | median |")
print("|---|---|")
for name, ns in all_rows[0].items():
    print(f"| `{name}` | {fmt(ns)} |")

print()
if len(runs) == 1:
    print("Ratios between transports (time ÷ the fastest transport in the row; 1.00 = fastest):")
else:
    print(f"Ratios between transports in each of {len(runs)} runs (time ÷ the fastest transport "
          "in the row; 1.00 = fastest), then the largest run-to-run spread of any cell in the row:")
print()
header = "| bench | " + " | ".join(TRANSPORTS) + (" | spread |" if len(runs) > 1 else " |")
print(header)
print("|---|" + "---|" * (len(TRANSPORTS) + (1 if len(runs) > 1 else 0)))
for key in all_ratios[0]:
    cells, spread = [], 1.0
    for t in TRANSPORTS:
        vals = [r.get(key, {}).get(t) for r in all_ratios]
        vals = [v for v in vals if v is not None]
        if not vals:
            cells.append("—")
            continue
        cells.append(" / ".join(f"{v:.2f}" for v in vals))
        spread = max(spread, max(vals) / min(vals))
    tail = f" | {spread:.2f}× |" if len(runs) > 1 else " |"
    print(f"| `{key}` | " + " | ".join(cells) + tail)
