#!/usr/bin/env bash
# The short-polling load generator's CPU cost per request beside wrk's: one `pushbench serve poll`
# pinned to core 0, and against it, one after the other, pinned to core 1:
#
#   1. pushbench load -t poll: CLIENTS clients polling every INTERVAL ms (GET /poll?topic=T&after=
#      <cursor>), RATE events/s published by the load generator itself;
#   2. wrk -t1 -c CLIENTS with scripts/poll-vs-wrk.lua, whose delay() makes each connection poll
#      once per INTERVAL ms; wrk cannot follow a cursor, so it asks GET /poll?topic=T&after=0&latest=1
#      (the newest event: one event per answer, as the load generator's polls carry about
#      RATE × INTERVAL events each), while a curl loop publishes RATE events/s to the topic.
#
# Both are measured the same way over the same kind of window: it opens once the server has seen
# CLIENTS connections open plus a settling time (at least 1 s and two intervals), and lasts
# DURATION s. At each end the script reads the server's /stats (the same request counter for both
# generators; publishes and the closing /stats read are taken off) and utime+stime of the
# generator's and the server's process from /proc/PID/stat.
#
#   scripts/poll-vs-wrk.sh [--clients N] [--interval MS] [--duration SECONDS] [--rate R] [--out DIR]
#
# Defaults: 1000 clients, 100 ms (10,000 requests/s), 20 s, 10 events/s, results/poll-vs-wrk.
# Writes DIR/summary.txt (also printed), DIR/pushbench-load.json and .txt, DIR/wrk.txt, and
# DIR/windows.txt (the raw counters at both ends of each window). Installs wrk (Debian package)
# when it is missing. Sends traffic to 127.0.0.1 only.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$here/results/poll-vs-wrk"
clients=1000
interval=100
duration=20
rate=10
topic=poll-vs-wrk
payload_bytes=64 # pushbench load's default --payload

usage() {
    echo "usage: $0 [--clients N] [--interval MS] [--duration SECONDS] [--rate EVENTS_PER_S] [--out DIR]" >&2
    exit 2
}

die() {
    echo "poll-vs-wrk.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || usage
    case "$1" in
        --clients) clients="$2" ;;
        --interval) interval="$2" ;;
        --duration) duration="$2" ;;
        --rate) rate="$2" ;;
        --out) out="$2" ;;
        *) usage ;;
    esac
    shift 2
done
for v in clients interval duration rate; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || die "--$v must be a whole number above 0 (got '${!v}')"
done

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
for cmd in wrk curl jq taskset; do
    command -v "$cmd" >/dev/null 2>&1 && continue
    case "$cmd" in
        taskset) die "taskset (util-linux) is missing" ;;
    esac
    echo "poll-vs-wrk.sh: $cmd is missing; installing the Debian package $cmd (apt-get)" >&2
    [[ ${#sudo[@]} -eq 0 ]] || command -v sudo >/dev/null 2>&1 || die "installing $cmd needs root or sudo"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$cmd" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing"
done

server_core=0
load_core=1
if [[ $(nproc) -lt 2 ]]; then
    echo "poll-vs-wrk.sh: fewer than 2 cores; server and load generators will share one" >&2
    load_core=0
fi
# Every client holds a socket: raise the open-files limit for everything started below.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$out"
(cd "$here" && cargo build --release --quiet)
bin="$here/target/release/pushbench"

tmp=$(mktemp -d)
pids=() # started and not yet waited for
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits for process $1 and takes it off the list cleanup() stops; returns its status.
reap() {
    local pid=$1 rest=() p status=0
    wait "$pid" || status=$?
    for p in "${pids[@]}"; do
        [[ "$p" == "$pid" ]] || rest+=("$p")
    done
    pids=("${rest[@]}")
    return "$status"
}

# sleep $1, in a way INT and TERM interrupt at once (bash runs traps only between commands).
pause() {
    sleep "$1" &
    pids+=("$!")
    reap "$!"
}

# Whether process $1 runs (a zombie does not).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]]
}

# utime + stime of process $1 (fields 14 and 15 of /proc/PID/stat), in clock ticks.
cpu_ticks() {
    local stat f
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || die "process $1 is gone"
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    read -r -a f <<<"${stat##*) }"
    echo $((f[11] + f[12]))
}

# $EPOCHREALTIME in microseconds.
now_us() {
    local t=$EPOCHREALTIME
    echo $((10#${t/./}))
}

start_server() {
    local log=$tmp/server.log
    : >"$log"
    taskset -c "$server_core" "$bin" serve poll --addr 127.0.0.1:0 >"$log" 2>&1 &
    server=$!
    pids+=("$server")
    for _ in $(seq 100); do grep -q '^listening on ' "$log" && break; sleep 0.1; done
    target=$(sed -n 's/^listening on //p' "$log")
    if [[ ! "$target" =~ ^http://127\.0\.0\.1:[0-9]+$ ]]; then
        cat "$log" >&2
        die "the server did not say it listens on http://127.0.0.1:PORT"
    fi
}

stats() {
    curl -sf --max-time 5 "$target/stats" || die "GET $target/stats failed"
}

# Waits until the server has at least $clients connections open, while process $1 runs.
wait_connected() {
    local pid=$1 open i
    for ((i = 0; i < 600; i++)); do
        alive "$pid" || die "the load generator (pid $pid) ended before its clients connected"
        open=$(stats | jq .connections_open)
        ((open >= clients)) && return
        sleep 0.1
    done
    die "the server saw fewer than $clients connections open after 60 s"
}

# The measured window of generator process $2, labelled $1 (no spaces): appends a row to $tmp/rows
# (label poll_requests window_us generator_ticks server_ticks deliveries bad_requests) and the
# raw counters to windows.txt.
measure() {
    local label=$1 pid=$2 s0 s1 g0 g1 v0 v1 t0 t1
    wait_connected "$pid"
    pause "$(awk -v ms="$settle_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    s0=$(stats)
    g0=$(cpu_ticks "$pid")
    v0=$(cpu_ticks "$server")
    t0=$(now_us)
    pause "$duration"
    s1=$(stats)
    g1=$(cpu_ticks "$pid")
    v1=$(cpu_ticks "$server")
    t1=$(now_us)
    alive "$pid" || die "$label ended inside the measured window"
    {
        echo "== $label"
        echo "start $t0 generator_ticks $g0 server_ticks $v0 stats $s0"
        echo "end   $t1 generator_ticks $g1 server_ticks $v1 stats $s1"
    } >>"$out/windows.txt"
    local d
    d=$(jq -rn --argjson a "$s0" --argjson b "$s1" \
        '[$b.requests - $a.requests - ($b.events_published - $a.events_published) - 1,
          $b.deliveries - $a.deliveries, $b.bad_requests - $a.bad_requests] | @tsv')
    local requests deliveries bad
    read -r requests deliveries bad <<<"$d"
    echo "$label $requests $((t1 - t0)) $((g1 - g0)) $((v1 - v0)) $deliveries $bad" >>"$tmp/rows"
}

# Publishes $rate events/s of $payload_bytes bytes to the topic, on a fixed schedule, until killed.
publish_loop() {
    local payload start k=0 due now wait_us child=
    # Stop with the current curl or sleep, not after it.
    trap 'kill $child 2>/dev/null; exit 0' TERM
    payload=$(printf '%*s' "$payload_bytes" '' | tr ' ' x)
    start=$(now_us)
    while :; do
        curl -sf --max-time 2 -o /dev/null --data-binary "$payload" "$target/publish?topic=$topic" &
        child=$!
        wait "$child" || true
        k=$((k + 1))
        due=$((start + k * 1000000 / rate))
        now=$(now_us)
        if ((due > now)); then
            wait_us=$((due - now))
            sleep "$((wait_us / 1000000)).$(printf '%06d' $((wait_us % 1000000)))" &
            child=$!
            wait "$child" || true
        fi
    done
}

# Settle: one interval puts every client on its random phase; at least 1 s, at least two intervals.
settle_ms=$((interval * 2 > 1000 ? interval * 2 : 1000))
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$out/windows.txt"
: >"$tmp/rows"
start_server
echo "server: taskset -c $server_core pushbench serve poll at $target (pid $server)"

# 1. pushbench load. Its own window starts after the connection ramp and a 1 s warm-up, and its
# publisher stops at the end of it: run it 2 s past the end of the measured window.
pb_duration_ms=$((settle_ms + duration * 1000 + 2000))
pb_cmd=("$bin" load -t poll --target "$target" --topic "$topic" -c "$clients"
    --poll-interval "${interval}ms" -r "$rate" -d "${pb_duration_ms}ms" --payload "$payload_bytes"
    --server-pid "$server" -q --json "$out/pushbench-load.json")
printf -v shown '%q ' "${pb_cmd[@]:1}"
pb_shown="taskset -c $load_core pushbench ${shown% }"
echo "== pushbench load: $pb_shown"
taskset -c "$load_core" "${pb_cmd[@]}" >"$out/pushbench-load.txt" 2>&1 &
pb=$!
pids+=("$pb")
measure pushbench_load "$pb"
reap "$pb" || { cat "$out/pushbench-load.txt" >&2; die "pushbench load failed"; }

# 2. wrk, against the same server and topic, with its own publisher.
wrk_duration_s=$(((settle_ms + 999) / 1000 + duration + 2))
wrk_url="$target/poll?topic=$topic&after=0&latest=1"
wrk_cmd=(wrk -t1 -c "$clients" -d "${wrk_duration_s}s" --timeout 10s -H "Accept: application/json"
    -s "$here/scripts/poll-vs-wrk.lua" "$wrk_url" -- "$interval" "$clients")
publish_loop &
publisher=$!
pids+=("$publisher")
# The publisher runs beside the generator, as pushbench load's own publisher does (curl and
# sleep inherit the affinity); its CPU is not counted as wrk's.
taskset -p -c "$load_core" "$publisher" >/dev/null
printf -v shown '%q ' "${wrk_cmd[@]}"
wrk_shown="taskset -c $load_core ${shown% } (curl publishing $rate events/s to $topic)"
echo "== wrk: $wrk_shown"
taskset -c "$load_core" "${wrk_cmd[@]}" >"$out/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
measure wrk "$wrk_pid"
reap "$wrk_pid" || { cat "$out/wrk.txt" >&2; die "wrk failed"; }
kill -TERM "$publisher"
reap "$publisher" || true

# The generators' own counts, for bytes per response (pushbench: its window; wrk: its run).
pb_bytes_per_resp=$(jq -r 'if .requests > 0 then .bytes_down / .requests else 0 end' "$out/pushbench-load.json")
wrk_total=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$out/wrk.txt")
wrk_bytes=$(sed -n 's/^poll-vs-wrk: requests [0-9]* bytes \([0-9]*\) .*/\1/p' "$out/wrk.txt")
[[ -n "$wrk_total" && -n "$wrk_bytes" ]] || die "no 'N requests in' summary in $out/wrk.txt"
wrk_errors=$(sed -n 's/^poll-vs-wrk: .* errors \(.*\)/\1/p' "$out/wrk.txt")
pb_errors=$(jq -c '.errors' "$out/pushbench-load.json")
pb_health=$(jq -r '"saturated \(.loadgen.saturated), loop lag p99 \(.loadgen.loop_lag_us.p99) us\(
    if (.loadgen.warnings | length) > 0 then ": " + (.loadgen.warnings | join("; ")) else "" end)"' \
    "$out/pushbench-load.json")

clk_tck=$(getconf CLK_TCK)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
wrk_version=$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2) || true
{
    echo "poll-vs-wrk: $clients clients polling every $interval ms, $rate events/s of $payload_bytes B,"
    echo "($((clients * 1000 / interval)) requests/s planned), a ${duration} s window after ${settle_ms} ms of settling;"
    echo "server on core $server_core, generator on core $load_core; $(nproc) cores, load average $load_before at"
    echo "the start and $load_after at the end; CLK_TCK $clk_tck; $wrk_version"
    echo
    awk -v tck="$clk_tck" '
        BEGIN {
            printf "%-15s %9s %11s %9s %13s %12s %17s\n", "generator", "requests", "requests/s",
                "CPU s", "CPU us/request", "events/resp", "server CPU us/req"
        }
        {
            label = $1; gsub("_", " ", label)
            req = $2; secs = $3 / 1e6; cpu = $4 / tck; srv = $5 / tck
            n = (req > 0) ? req : 1
            per[NR] = cpu * 1e6 / n
            printf "%-15s %9d %11.1f %9.2f %13.2f %12.2f %17.2f\n", label, req, req / secs, cpu,
                per[NR], $6 / n, srv * 1e6 / n
        }
        END {
            if (per[2] > 0) printf "\nratio pushbench load / wrk, CPU per request: %.2fx\n", per[1] / per[2]
        }' "$tmp/rows"
    echo
    printf 'bytes per response (headers included), from the generators: pushbench load %.1f, wrk %.1f\n' \
        "$pb_bytes_per_resp" "$(awk -v b="$wrk_bytes" -v n="$wrk_total" 'BEGIN { print b / ((n > 0) ? n : 1) }')"
    echo "errors: pushbench load $pb_errors; wrk $wrk_errors; 4xx answers in the windows: $(awk '{ printf "%s%s", sep, $NF; sep = ", " }' "$tmp/rows")"
    echo "pushbench load's own health: $pb_health"
    echo
    echo "requests: the server's /stats request counter over the window, less publishes and the"
    echo "closing /stats read. CPU: utime+stime of the generator's process (/proc/PID/stat) over the"
    echo "same window. pushbench load follows each client's cursor (after=<last id>) and parses,"
    echo "times and accounts every event; wrk asks after=0&latest=1 (the newest event, never a"
    echo "cursor) and only counts responses. pushbench load's CPU includes its own publisher ($rate"
    echo "events/s) and bookkeeping (a 20 ms check loop, /proc sampling every 250 ms); wrk's"
    echo "publisher is a separate curl loop, not counted."
    echo
    echo "pushbench load: $pb_shown"
    echo "wrk: $wrk_shown"
} >"$out/summary.txt"
cat "$out/summary.txt"
echo "wrote $out"
