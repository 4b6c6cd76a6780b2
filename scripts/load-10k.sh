#!/usr/bin/env bash
# The headline load benchmark: every transport at 10,000 subscribers, a broadcast of 1 event/s for
# 30 s (polling every 1 s), server pinned to core 0 and load generator to core 1, one after another
# in one run. With --nchan, the same five runs against Nchan (restarted before each, so its
# memory per connection is measured from a fresh process). With --gateway, two more runs: the
# FCM-style gateway (`pushbench serve gateway`), one topic send per event fanned out to every
# device, the devices acknowledging once per 10 messages as FCM's own clients do (gateway-ws),
# then each message (gateway-ack1-ws): the relay hop beside direct WebSocket, and what
# acknowledging each message costs it.
#
#   scripts/load-10k.sh [--nchan] [--gateway] [--only-ws] [--out DIR] [--clients N] [--duration D]
#
# --only-ws runs WebSocket alone of the five transports (with --gateway: the relay against
# direct push, side by side).
#
# Writes DIR/<server>-<transport>.json (docs/RESULTS.md) and DIR/summary.txt, and prints the
# summaries. Needs a release build (it makes one) and, for --nchan, nginx-light and
# libnginx-mod-nchan (scripts/nchan.sh start --install installs them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$here/results/load-10k"
clients=10000
duration=30s
nchan=0
gateway=0
only_ws=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nchan) nchan=1 ;;
        --gateway) gateway=1 ;;
        --only-ws) only_ws=1 ;;
        --out) out="$2"; shift ;;
        --clients) clients="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        *) echo "usage: $0 [--nchan] [--gateway] [--only-ws] [--out DIR] [--clients N] [--duration D]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
(cd "$here" && cargo build --release --quiet)
bin="$here/target/release/pushbench"
transports=(poll longpoll stream sse ws)
[[ $only_ws -eq 1 ]] && transports=(ws)
server_core=0
load_core=1
if [[ $(nproc) -lt 2 ]]; then
    echo "load-10k.sh: fewer than 2 cores; server and load generator will share one" >&2
    load_core=0
fi

load() { # server-label transport target [extra args]
    local label=$1 t=$2 target=$3
    shift 3
    echo "== $label $t: taskset -c $load_core pushbench load -t $t --target $target -c $clients -r 1 -d $duration --poll-interval 1s $*"
    taskset -c "$load_core" "$bin" load -t "$t" --target "$target" -c "$clients" -r 1 \
        -d "$duration" --poll-interval 1s -q --json "$out/$label-$t.json" "$@"
}

: >"$out/summary.txt"
serve_and_load() { # what-to-serve label transport [load args]
    local what=$1 label=$2 t=$3
    shift 3
    local log pid target
    log=$(mktemp)
    taskset -c "$server_core" "$bin" serve "$what" --addr 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q '^listening on ' "$log" && break; sleep 0.1; done
    target=$(sed -n 's/^listening on //p' "$log")
    load "$label" "$t" "$target" "$@" | tee -a "$out/summary.txt" || true
    kill -TERM "$pid"
    wait "$pid" || true
    rm -f "$log"
}

for t in "${transports[@]}"; do
    serve_and_load "$t" pushbench "$t"
done
if [[ $gateway -eq 1 ]]; then
    serve_and_load gateway gateway ws --target-profile gateway --send-to topic
    serve_and_load gateway gateway-ack1 ws --target-profile gateway --send-to topic --ack-every 1
fi

if [[ $nchan -eq 1 ]]; then
    for t in "${transports[@]}"; do
        info=$(taskset -c "$server_core" "$here/scripts/nchan.sh" start)
        target=$(sed -n 's/^listening on //p' <<<"$info")
        worker=$(sed -n 's/^worker_pid //p' <<<"$info")
        load nchan "$t" "$target" --target-profile nchan --server-pid "$worker" \
            | tee -a "$out/summary.txt" || true
        "$here/scripts/nchan.sh" stop
    done
fi
echo "wrote $out"
