#!/usr/bin/env python3
"""The Markdown table of a `scripts/load-10k.sh` run: one row per `pushbench load --json` report
in DIR (named SERVER-TRANSPORT.json), then pushbench ÷ Nchan side by side when both are there.

    scripts/load-table.py results/footprint-10k

Every cell is read from the reports as written (docs/RESULTS.md names the fields); nothing is
computed but the ratios between servers.
"""
import json
import pathlib
import sys

ORDER = ["poll", "longpoll", "stream", "sse", "ws"]
SERVERS = ["pushbench", "gateway", "gateway-ack1", "nchan"]
LABELS = {"gateway": "ws (devices, ack per 10)", "gateway-ack1": "ws (devices, ack each)"}


def load(path):
    return json.loads(path.read_text())


def num(v, fmt):
    return "–" if v is None else format(v, fmt)


def row(server, transport, r):
    lat, srv, gen = r["latency_us"], r["server"], r["loadgen"]
    lag = gen.get("loop_lag_us") or {}
    rss = srv.get("rss_per_conn_bytes")
    flagged = "yes ‡" if gen.get("saturated") else "no"
    cells = [
        server,
        transport,
        num(lat["p50"] / 1000, ".1f"),
        num(lat["p99"] / 1000, ".1f"),
        f"{r['delivered']:,}/{r['expected']:,}",
        num(srv.get("cpu_ms_per_1k_events"), ".2f"),
        num(None if rss is None else rss / 1024, ".2f"),
        num(gen.get("cpu_us_per_delivery"), ".2f"),
        num(gen.get("cpu_vs_server"), ".2f"),
        num(None if lag.get("p99") is None else lag["p99"] / 1000, ".2f"),
        flagged,
        f"{100 * (r.get('steal_share') or 0):.1f}%",
    ]
    return "| " + " | ".join(cells) + " |"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: load-table.py DIR")
    root = pathlib.Path(sys.argv[1])
    reports = {}
    for path in sorted(root.glob("*.json")):
        server, _, transport = path.stem.rpartition("-")
        if server in SERVERS and transport in ORDER:
            reports[(server, transport)] = load(path)
    if not reports:
        sys.exit(f"load-table.py: no SERVER-TRANSPORT.json reports in {root}")
    print(
        "| server | transport | p50 ms | p99 ms | delivered/expected | server CPU ms/1k "
        "| server RSS/conn KiB | gen CPU µs/deliv | gen÷server | gen loop lag p99 ms | flagged "
        "| steal |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for server in SERVERS:
        for transport in ORDER:
            r = reports.get((server, transport))
            if r is not None:
                label = LABELS.get(server, transport)
                print(row(server, label, r))
    relay = [g for g in ["gateway", "gateway-ack1"] if (g, "ws") in reports and ("pushbench", "ws") in reports]
    if relay:
        print()
        direct = reports[("pushbench", "ws")]["server"].get("cpu_ms_per_1k_events")
        for g in relay:
            cpu = reports[(g, "ws")]["server"].get("cpu_ms_per_1k_events")
            if cpu and direct:
                print(f"{g} ÷ direct WebSocket, server CPU per delivery: {cpu / direct:.3f}×")
    ours = [t for t in ["stream", "sse", "ws"] if ("pushbench", t) in reports and ("nchan", t) in reports]
    if not ours:
        return
    print()
    print("pushbench ÷ Nchan, side by side:")
    print()
    print("| | " + " | ".join(ours) + " |")
    print("|---|" + "---:|" * len(ours))
    for name, get in [
        ("memory per idle connection", lambda r: r["server"].get("rss_per_conn_bytes")),
        ("server CPU per delivery", lambda r: r["server"].get("cpu_ms_per_1k_events")),
        ("p99", lambda r: r["latency_us"]["p99"]),
    ]:
        cells = []
        for t in ours:
            a, b = get(reports[("pushbench", t)]), get(reports[("nchan", t)])
            cells.append("–" if not a or not b else f"{a / b:.3f}×")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
