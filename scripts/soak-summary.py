#!/usr/bin/env python3
"""Reads what scripts/soak.sh wrote in DIR (<run>.json load reports, <run>.csv descriptor samples)
and writes DIR/SUMMARY.md: per run, loss, latency, the server's RSS drift over the window and its
descriptor count, each judged against issue 14's bar.

    python3 scripts/soak-summary.py DIR

- RSS drift (judged after the replay buffer filled; see below): the median RSS of the window's last minute against the median of its first minute
  (the warm-up is over by then), from the report's timeline (every 250 ms). Medians, so one
  sample caught mid-allocation moves nothing; a leak moves the whole last minute. The peak over
  the window is given beside it. Bar: under 5%. A second figure starts from the minute after the
  topic's replay buffer filled (4,096 events, pushbench's default `--replay`: 410 s at 10 events/s,
  counted from the warm-up's first event), because until then the server is still filling a
  bounded buffer, which is growth by design; after it, growth is what a leak would be.
- Descriptors: the server's open descriptors over the window, from DIR/<run>.csv (every 5 s).
  Bar: constant.
- Loss: window events never delivered, duplicates and reorderings, from the report. Bar: 0.
"""
import csv
import json
import os
import statistics
import sys

RUNS = ["poll", "longpoll", "stream", "sse", "ws", "gateway"]
DRIFT_BAR = 0.05
# pushbench's default replay buffer, in events (`pushbench serve --replay`).
REPLAY_EVENTS = 4096


def window(report):
    samples = [s for s in report["timeseries"] if s["phase"] == "window"]
    return samples[0]["t_s"], samples[-1]["t_s"], samples


def rss_drift(samples, t0, t1, full_at):
    rss = [(s["t_s"], s["server_rss_bytes"]) for s in samples if s.get("server_rss_bytes")]
    first = statistics.median(b for t, b in rss if t < t0 + 60)
    last = statistics.median(b for t, b in rss if t > t1 - 60)
    peak = max(b for _, b in rss)
    filled = [b for t, b in rss if full_at <= t < full_at + 60]
    after_fill = last / statistics.median(filled) - 1 if filled and full_at < t1 - 120 else None
    return first, last, peak, after_fill


def descriptors(path, t0, t1):
    with open(path) as f:
        fds = [int(r["fds"]) for r in csv.DictReader(f) if t0 + 1 <= int(r["t_ms"]) / 1000 <= t1]
    return min(fds), max(fds), len(fds)


def row(out, run):
    report = json.load(open(os.path.join(out, f"{run}.json")))
    t0, t1, samples = window(report)
    config = report["config"]
    full_at = t0 + REPLAY_EVENTS / config["rate"] - config["warmup"]
    first, last, peak, after_fill = rss_drift(samples, t0, t1, full_at)
    fd_min, fd_max, fd_n = descriptors(os.path.join(out, f"{run}.csv"), t0, t1)
    drift = last / first - 1
    lat = report["latency_us"]
    faults = report["lost"] + report["duplicates"] + report["out_of_order"]
    verdict, notes = [], []
    # The bar is judged after the warm-up, and for memory the warm-up lasts until the bounded
    # replay buffer is full; the window's own drift is shown, and named when only the filling
    # passes the bar.
    judged = drift if after_fill is None else after_fill
    if abs(judged) >= DRIFT_BAR:
        verdict.append(f"RSS drift {judged:+.1%}")
    elif abs(drift) >= DRIFT_BAR:
        notes.append(f"the window's {drift:+.1%} is the replay buffer filling")
    if fd_min != fd_max:
        verdict.append(f"descriptors {fd_min}–{fd_max}")
    if faults:
        verdict.append(f"{faults} lost, duplicated or reordered")
    if report["loadgen"]["saturated"]:
        verdict.append("load generator saturated")
    return (
        f"| {run} | {report['delivered']:,} / {report['expected']:,} | {report['lost']:,} | "
        f"{report['duplicates']} / {report['out_of_order']} | {lat['p50'] / 1000:.2f} / {lat['p99'] / 1000:.2f} | "
        f"{first / 2**20:.1f} → {last / 2**20:.1f} ({drift:+.1%}) | "
        f"{'–' if after_fill is None else f'{after_fill:+.1%}'} | {peak / 2**20:.1f} | "
        f"{fd_min}–{fd_max} ({fd_n} samples) | {'; '.join(verdict) or 'ok'}{''.join('; ' + n for n in notes)} |"
    ), report


def main(out):
    lines, config = [], None
    for run in RUNS:
        if not os.path.exists(os.path.join(out, f"{run}.json")):
            continue
        line, report = row(out, run)
        lines.append(line)
        config = config or report["config"]
    if not lines:
        sys.exit(f"soak-summary: no reports in {out}")
    command_file = os.path.join(out, "command.txt")
    command = open(command_file).read().strip() if os.path.exists(command_file) else "scripts/soak.sh"
    text = [
        "# Soak",
        "",
        f"Made by `{command}`. Each run: "
        f"{config['clients']:,} subscribers, {config['rate']:g} events/s, the window after the "
        "warm-up; server pinned to core 0, load generator to core 1. The bars are issue 14's: "
        "RSS drift under 5% after the warm-up, a constant descriptor count, no loss.",
        "",
        "| run | delivered / expected | lost | duplicates / reordered | p50 / p99 ms | "
        "server RSS MiB, first → last minute (drift) | drift after the replay buffer filled | "
        "peak MiB | descriptors | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *lines,
        "",
    ]
    with open(os.path.join(out, "SUMMARY.md"), "w") as f:
        f.write("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main(sys.argv[1])
