#!/usr/bin/env bash
# The thundering herd against the listen queue: 10,000 stream subscribers, every connection cut
# at once (SIGUSR1), each client back after a fixed 1 s, against `serve stream --backlog B` for
# each B given (default: 128, tokio's own, then 4096, pushbench's). Prints, per backlog, the
# kernel's listen-queue overflows during the run (TcpExtListenOverflows: handshakes dropped, each
# client of one waiting a second for its SYN to be resent) and the time from the first reconnect
# to 99% back. Server on core 0, load generator on core 1; about a minute per backlog.
#
#   scripts/backlog-herd.sh [B ...]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$here/target/release/pushbench"
command -v nstat >/dev/null || { echo "backlog-herd: needs nstat (apt-get install iproute2)" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
[ $# -gt 0 ] || set -- 128 4096
i=0
for backlog in "$@"; do
    i=$((i + 1))
    taskset -c 0 "$bin" serve stream --threads 1 --backlog "$backlog" --addr 127.0.0.1:0 \
        > "$work/serve.out" 2>&1 &
    server=$!
    for _ in $(seq 50); do grep -q listening "$work/serve.out" && break; sleep 0.1; done
    url=$(head -1 "$work/serve.out" | sed 's/listening on //')
    nstat -n > /dev/null
    taskset -c 1 "$bin" load -t stream --target "$url" -c 10000 --workers 2 --ramp 5000 -r 10 \
        -d 10s --reconnect-delay 1s --source-ip "127.31.$i.1" -q --json "$work/load.json" \
        > /dev/null &
    load=$!
    sleep 8
    kill -USR1 "$server"
    wait "$load"
    kill "$server"; wait "$server" 2>/dev/null || true
    overflows=$(nstat TcpExtListenOverflows 2>/dev/null | awk '/ListenOverflows/ {print $2}')
    python3 - "$work/load.json" "$backlog" "${overflows:-0}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ts = r["timeseries"]
first = next((a["t_s"] for a, b in zip(ts, ts[1:]) if b["reconnects"] > a["reconnects"]), None)
back = next((s["t_s"] - first for s in ts if first is not None and s["reconnects"] >= 0.99 * r["clients_connected"]), None)
print(f"backlog {sys.argv[2]}: listen overflows {sys.argv[3]}, reconnects {r['reconnects']}, "
      f"99% back {back:.2f} s after the first reconnect (250 ms samples), lost {r['lost']}, "
      f"p99 {r['latency_us']['p99'] / 1000:.0f} ms")
PY
done
