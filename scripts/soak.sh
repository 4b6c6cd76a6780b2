#!/usr/bin/env bash
# The soak: every technique and the FCM-style gateway held under load for a long time, one after
# another, to show what a short benchmark cannot: memory that creeps, descriptors that leak,
# events lost after minutes. Not run in CI (an hour with the defaults).
#
#   scripts/soak.sh [--out DIR] [--clients N] [--rate R] [--duration D] [--warmup D] [--only T]
#
# Defaults: 5,000 subscribers, 10 events/s, a 10-minute window after a 30 s warm-up, for poll
# (every 1 s), longpoll, stream, sse, ws and gateway (one topic send per event, fanned out to
# every device). The server is pinned to core 0 and the load generator to core 1. While each run
# goes, the server's RSS and open descriptors are read from /proc every 5 s into DIR/<T>.csv;
# the load report is DIR/<T>.json (docs/RESULTS.md, with RSS every 250 ms in its timeline).
# scripts/soak-summary.py then writes DIR/SUMMARY.md: loss, latency, RSS drift after the warm-up
# and the descriptor count, each against the bar of issue 14 (drift under 5%, a constant
# descriptor count, no loss).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$here/results/soak"
clients=5000
rate=10
duration=10m
warmup=30s
only=""
args="$*"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="$2"; shift ;;
        --clients) clients="$2"; shift ;;
        --rate) rate="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --warmup) warmup="$2"; shift ;;
        --only) only="$2"; shift ;;
        *) echo "usage: $0 [--out DIR] [--clients N] [--rate R] [--duration D] [--warmup D] [--only T]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
echo "scripts/soak.sh $args" >"$out/command.txt"
(cd "$here" && cargo build --release --quiet)
bin="$here/target/release/pushbench"
runs=(poll longpoll stream sse ws gateway)
[[ -n $only ]] && runs=("$only")
server_core=0
load_core=1
if [[ $(nproc) -lt 2 ]]; then
    echo "soak.sh: fewer than 2 cores; server and load generator will share one" >&2
    load_core=0
fi

# Every 5 s: ms since the server started, its RSS (KiB) and its open descriptors.
sample() { # pid csv
    local pid=$1 csv=$2 start
    start=$(date +%s%N)
    echo "t_ms,rss_kib,fds" >"$csv"
    while kill -0 "$pid" 2>/dev/null; do
        local rss fds
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
        [[ -n $rss ]] && echo "$(( ($(date +%s%N) - start) / 1000000 )),$rss,$fds" >>"$csv"
        sleep 5
    done
}

for run in "${runs[@]}"; do
    what=$run transport=$run extra=()
    if [[ $run == gateway ]]; then
        transport=ws
        extra=(--target-profile gateway --send-to topic)
    fi
    log=$(mktemp)
    taskset -c "$server_core" "$bin" serve "$what" --addr 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q '^listening on ' "$log" && break; sleep 0.1; done
    target=$(sed -n 's/^listening on //p' "$log")
    sample "$pid" "$out/$run.csv" &
    sampler=$!
    echo "== $run: taskset -c $load_core pushbench load -t $transport --target $target -c $clients -r $rate -d $duration --warmup $warmup --poll-interval 1s ${extra[*]}"
    taskset -c "$load_core" "$bin" load -t "$transport" --target "$target" -c "$clients" \
        -r "$rate" -d "$duration" --warmup "$warmup" --poll-interval 1s -q \
        --json "$out/$run.json" "${extra[@]}" || echo "soak.sh: the $run run failed" >&2
    kill -TERM "$pid"
    wait "$pid" || true
    wait "$sampler" || true
    rm -f "$log"
done
python3 "$here/scripts/soak-summary.py" "$out"
