#!/usr/bin/env bash
# Runs Pushpin (a GRIP proxy) on loopback in front of `pushbench serve grip`, for
# `pushbench load --target-profile pushpin`.
#
#   scripts/pushpin.sh start [PORT] [--install]   PORT 0 or omitted: pick a free port
#   scripts/pushpin.sh stop
#
# `start` renders deploy/pushpin/pushpin.conf into a private prefix directory
# ($PUSHPIN_PREFIX, default ${TMPDIR:-/tmp}/pushbench-pushpin), starts the origin
# (`pushbench serve grip`, publishing to Pushpin's HTTP publish API) and Pushpin on 127.0.0.1,
# waits until a subscribe request through Pushpin reaches the origin, and prints, on stdout and
# nothing else:
#
#   listening on http://127.0.0.1:PORT        subscribers connect here (Pushpin)
#   publish on http://127.0.0.1:ORIGIN_PORT   the publisher posts here (the origin)
#   pid RUNNER_PID
#
# Pushpin is several processes (its runner starts condure, zurl, pushpin-proxy and
# pushpin-handler), and the origin runs under the runner too, so sample the runner's whole tree:
# `pushbench load --server-pid RUNNER_PID` counts a process and all its descendants. `stop` ends
# them all and removes the prefix. Nothing is installed unless --install is given: then
# `apt-get install -y pushpin` when Pushpin is missing. Environment: PUSHPIN_PREFIX, PUSHBENCH
# (the pushbench binary; default target/release/pushbench, else the one on PATH),
# PUSHPIN_MESSAGE_RATE and PUSHPIN_MESSAGE_HWM (Pushpin's rate limit and queue), PUSHPIN_LOG_LEVEL.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
template="$here/deploy/pushpin/pushpin.conf"
prefix="${PUSHPIN_PREFIX:-${TMPDIR:-/tmp}/pushbench-pushpin}"

die() {
    echo "pushpin.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start [PORT] [--install] | stop" >&2
    exit 2
}

pushbench_bin() {
    if [[ -n "${PUSHBENCH:-}" ]]; then
        echo "$PUSHBENCH"
    elif [[ -x "$here/target/release/pushbench" ]]; then
        echo "$here/target/release/pushbench"
    else
        command -v pushbench || die "no pushbench binary: build it (cargo build --release) or set PUSHBENCH"
    fi
}

have_pushpin() {
    command -v pushpin >/dev/null 2>&1 && command -v condure >/dev/null 2>&1 \
        && command -v zurl >/dev/null 2>&1
}

install_pushpin() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "--install needs root or sudo"
        sudo=(sudo)
    fi
    echo "pushpin.sh: installing pushpin" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y pushpin >&2 \
        || { "${sudo[@]}" apt-get update >&2 \
            && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y pushpin >&2; }
}

# Whether process $1 runs (a zombie waiting for its parent to reap it does not).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]]
}

# Whether something listens on 127.0.0.1:$1 (or on any address) according to /proc/net/tcp.
port_busy() {
    local hex
    hex=$(printf ':%04X$' "$1")
    awk -v p="$hex" '$2 ~ p && $4 == "0A" { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# A port below the kernel's ephemeral range (32768 and up), so no outgoing connection holds it.
free_port() {
    local port i
    for ((i = 0; i < 50; i++)); do
        port=$((10000 + RANDOM % 22000))
        port_busy "$port" || { echo "$port"; return; }
    done
    die "no free port found"
}

# One HTTP request with bash's /dev/tcp; prints the status code (empty when nothing answers).
http_status() {
    local port=$1 path=$2 line=""
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
        IFS= read -r -t 2 line <&3 || true
        exec 3<&- 3>&-
    fi 2>/dev/null
    line=${line#HTTP/1.? }
    echo "${line%% *}"
}

# The pids of $1 and all its descendants.
tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        tree "$child"
    done
}

start() {
    local port=0 install=0 arg
    for arg in "$@"; do
        case "$arg" in
            --install) install=1 ;;
            ''|*[!0-9]*) usage ;;
            *) port=$arg ;;
        esac
    done
    ((port <= 65535)) || die "invalid port $port"
    if ! have_pushpin; then
        ((install)) || die "pushpin (with condure and zurl) is missing; install the pushpin package, or pass --install"
        install_pushpin
        have_pushpin || die "pushpin is still missing after installing"
    fi
    [[ -f "$template" ]] || die "missing $template"
    if [[ -f "$prefix/runner.pid" ]] && alive "$(<"$prefix/runner.pid")"; then
        die "already running (pid $(<"$prefix/runner.pid")) in $prefix; run '$0 stop' first or set PUSHPIN_PREFIX"
    fi
    local bin attempt pick_free=0
    bin=$(pushbench_bin)
    ((port != 0)) || pick_free=1
    mkdir -p "$prefix/run" "$prefix/log"
    touch "$prefix/.pushbench-pushpin"
    # A port picked free can still be taken before Pushpin binds it (another server starting
    # at the same time): then pick again.
    for ((attempt = 1; attempt <= 5; attempt++)); do
        if launch "$bin" "$( ((pick_free)) && free_port || echo "$port")" "$(free_port)"; then
            return
        fi
        if ((pick_free)) && grep -qs 'Address already in use' "$prefix"/log/*.log; then
            stop_tree >/dev/null 2>&1 || true
            rm -f "$prefix/runner.pid" "$prefix/origin.pid" "$prefix"/log/*.log
            continue
        fi
        break
    done
    tail -n 5 "$prefix"/log/*.log >&2 2>/dev/null || true
    stop >/dev/null 2>&1 || true
    die "Pushpin did not start on 127.0.0.1 (its logs are above)"
}

# Starts the origin and Pushpin on ports $2 (subscribers) and $3 (publish API) and waits until
# a short poll through Pushpin is answered; prints the three lines of `start`. Fails if Pushpin
# exits or does not answer within 15 s.
launch() {
    local bin=$1 port=$2 publish_port=$3
    sed -e "s#@PREFIX@#$prefix#g" -e "s#@PORT@#$port#g" -e "s#@PUBLISH_PORT@#$publish_port#g" \
        -e "s#@MESSAGE_RATE@#${PUSHPIN_MESSAGE_RATE:--1}#g" \
        -e "s#@MESSAGE_HWM@#${PUSHPIN_MESSAGE_HWM:--1}#g" \
        -e "s#@LOG_LEVEL@#${PUSHPIN_LOG_LEVEL:-1}#g" \
        "$template" >"$prefix/pushpin.conf"
    : >"$prefix/origin.out"
    # One process tree: the origin starts first, then this shell becomes Pushpin's runner, so
    # the origin is the runner's child and the runner's pid covers everything to sample.
    setsid bash -c '
        prefix=$1 bin=$2 publish_port=$3
        "$bin" serve grip --addr 127.0.0.1:0 --grip-publish "127.0.0.1:$publish_port" \
            >"$prefix/origin.out" 2>"$prefix/log/origin.log" </dev/null &
        echo $! >"$prefix/origin.pid"
        for i in $(seq 1 100); do
            grep -q "^listening on " "$prefix/origin.out" && break
            sleep 0.05
        done
        origin=$(sed -n "s#^listening on http://##p" "$prefix/origin.out")
        [[ -n "$origin" ]] || exit 1
        echo "* $origin,over_http" >"$prefix/routes"
        echo $$ >"$prefix/runner.pid"
        exec pushpin --config "$prefix/pushpin.conf"
    ' pushpin-runner "$prefix" "$bin" "$publish_port" >"$prefix/log/runner.log" 2>&1 </dev/null &

    local runner="" origin="" i
    for ((i = 0; i < 150; i++)); do
        [[ -f "$prefix/runner.pid" ]] && runner=$(<"$prefix/runner.pid")
        if [[ -n "$runner" ]] && ! alive "$runner"; then
            return 1
        fi
        origin=$(sed -n 's#^listening on http://##p' "$prefix/origin.out" 2>/dev/null || true)
        # A short poll through Pushpin answers only once the proxy, zurl and the origin are up;
        # a held stream only once the handler takes holds too (before that the proxy answers
        # 500, seen when two Pushpins and the tests' builds shared the machine).
        if [[ -n "$runner" && -n "$origin" && "$(http_status "$port" /poll)" == 200 ]] \
            && port_busy "$publish_port" \
            && [[ "$(http_status "$port" /sse?topic=pushbench-ready)" == 200 ]]; then
            echo "listening on http://127.0.0.1:$port"
            echo "publish on http://$origin"
            echo "pid $runner"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Ends the runner's tree and the origin.
stop_tree() {
    local runner pids i left=""
    if [[ -f "$prefix/runner.pid" ]]; then
        runner=$(<"$prefix/runner.pid")
        pids=$(tree "$runner")
        kill -TERM $pids 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            left=""
            for p in $pids; do alive "$p" && left="$left $p"; done
            [[ -z "$left" ]] && break
            sleep 0.1
        done
        if [[ -n "$left" ]]; then
            echo "pushpin.sh: still running after 5 s:$left; killing" >&2
            kill -KILL $left 2>/dev/null || true
        fi
        echo "stopped pid $runner"
    else
        echo "pushpin.sh: not running (prefix $prefix)" >&2
    fi
    if [[ -f "$prefix/origin.pid" ]]; then
        kill -TERM "$(<"$prefix/origin.pid")" 2>/dev/null || true
    fi
}

stop() {
    stop_tree
    # Only ever remove a directory this script made.
    if [[ -f "$prefix/.pushbench-pushpin" ]]; then
        rm -rf "$prefix"
    fi
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; (($# == 0)) || usage; stop ;;
    *) usage ;;
esac
