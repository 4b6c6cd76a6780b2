#!/usr/bin/env bash
# Runs Nchan (nginx + the nchan module) on loopback for `pushbench load --target-profile nchan`.
#
#   scripts/nchan.sh start [PORT] [--install]   PORT 0 or omitted: pick a free port
#   scripts/nchan.sh stop
#
# `start` renders deploy/nchan/nginx.conf into a private prefix directory ($NCHAN_PREFIX, default
# ${TMPDIR:-/tmp}/pushbench-nchan), starts nginx there on 127.0.0.1:PORT, waits until it
# answers, and prints, on stdout and nothing else:
#
#   listening on http://127.0.0.1:PORT
#   pid MASTER_PID
#   worker_pid WORKER_PID
#
# Sample CPU and memory on the worker (`pushbench load --server-pid WORKER_PID`): the master
# only supervises. `stop` ends the nginx of the same prefix and removes the prefix.
# Nothing is installed unless --install is given: then `apt-get install -y nginx-light
# libnginx-mod-nchan` when nginx or the module is missing. Environment: NCHAN_PREFIX,
# NCHAN_MODULE (path of ngx_nchan_module.so), NGINX (the nginx binary).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
template="$here/deploy/nchan/nginx.conf"
prefix="${NCHAN_PREFIX:-${TMPDIR:-/tmp}/pushbench-nchan}"
nginx_bin="${NGINX:-nginx}"

die() {
    echo "nchan.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start [PORT] [--install] | stop" >&2
    exit 2
}

find_module() {
    if [[ -n "${NCHAN_MODULE:-}" ]]; then
        echo "$NCHAN_MODULE"
        return
    fi
    local path
    if command -v dpkg >/dev/null 2>&1; then
        path=$(dpkg -L libnginx-mod-nchan 2>/dev/null | grep -m1 '/ngx_nchan_module\.so$' || true)
        if [[ -n "$path" ]]; then
            echo "$path"
            return
        fi
    fi
    echo /usr/lib/nginx/modules/ngx_nchan_module.so
}

have_nchan() {
    command -v "$nginx_bin" >/dev/null 2>&1 && [[ -f "$(find_module)" ]]
}

install_nchan() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "--install needs root or sudo"
        sudo=(sudo)
    fi
    echo "nchan.sh: installing nginx-light and libnginx-mod-nchan" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light libnginx-mod-nchan >&2 \
        || { "${sudo[@]}" apt-get update >&2 \
            && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light libnginx-mod-nchan >&2; }
}

# Whether process $1 runs (a zombie waiting for its parent to reap it does not).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]]
}

# Prints the pid in the pid file if that process is alive.
running_pid() {
    local pid
    [[ -f "$prefix/nginx.pid" ]] || return 1
    pid=$(<"$prefix/nginx.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    echo "$pid"
}

# Whether something listens on 127.0.0.1:$1 (or on any address) according to /proc/net/tcp.
port_busy() {
    local hex
    hex=$(printf ':%04X$' "$1")
    # Column 4 is the state; 0A is LISTEN.
    awk -v p="$hex" '$2 ~ p && $4 == "0A" { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# One HTTP request with bash's /dev/tcp; prints the status code (empty when nothing answers).
http_status() {
    local port=$1 line=""
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
        printf 'GET /nchan_status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
        IFS= read -r -t 2 line <&3 || true
        exec 3<&- 3>&-
    fi 2>/dev/null
    line=${line#HTTP/1.? }
    echo "${line%% *}"
}

worker_of() {
    # Field 4 of /proc/PID/stat is the parent pid (nginx's comm has no spaces).
    awk -v m="$1" '$4 == m { print $1; exit }' /proc/[0-9]*/stat 2>/dev/null || true
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
    if ! have_nchan; then
        ((install)) || die "nginx or the nchan module ($(find_module)) is missing; install nginx-light and libnginx-mod-nchan, or pass --install"
        install_nchan
        have_nchan || die "the nchan module is still missing after installing"
    fi
    [[ -f "$template" ]] || die "missing $template"
    if pid=$(running_pid); then
        die "already running (pid $pid) in $prefix; run '$0 stop' first or set NCHAN_PREFIX"
    fi
    local module
    module=$(find_module)
    mkdir -p "$prefix/tmp"
    touch "$prefix/.pushbench-nchan"
    # Workers run as nobody when started by root; let them reach their temp paths.
    chmod 755 "$prefix" "$prefix/tmp"

    local attempt tries=1 pick_free=0
    if ((port == 0)); then
        pick_free=1
        tries=20
    fi
    for ((attempt = 1; attempt <= tries; attempt++)); do
        if ((pick_free)); then
            port=$((20000 + RANDOM % 40000))
            port_busy "$port" && continue
        fi
        sed -e "s#@PREFIX@#$prefix#g" -e "s#@PORT@#$port#g" -e "s#@MODULE@#$module#g" \
            "$template" >"$prefix/nginx.conf"
        : >"$prefix/error.log"
        if "$nginx_bin" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/error.log" 2>>"$prefix/error.log"; then
            break
        fi
        if ((pick_free)) && grep -q 'Address already in use' "$prefix/error.log"; then
            continue
        fi
        cat "$prefix/error.log" >&2
        die "nginx failed to start"
    done
    ((attempt <= tries)) || die "no free port found in $tries attempts"

    local master="" worker="" i
    for ((i = 0; i < 100; i++)); do
        master=$(running_pid || true)
        if [[ -n "$master" && "$(http_status "$port")" == 200 ]]; then
            worker=$(worker_of "$master")
            [[ -n "$worker" ]] && break
        fi
        sleep 0.1
    done
    if [[ -z "$worker" ]]; then
        cat "$prefix/error.log" >&2
        [[ -n "$master" ]] && kill "$master" 2>/dev/null || true
        die "nginx did not answer on 127.0.0.1:$port within 10 s"
    fi
    echo "listening on http://127.0.0.1:$port"
    echo "pid $master"
    echo "worker_pid $worker"
}

stop() {
    (($# == 0)) || usage
    local pid worker i
    if pid=$(running_pid); then
        worker=$(worker_of "$pid")
        # TERM is nginx's fast shutdown: streaming subscribers would hold a graceful one forever.
        kill -TERM "$pid"
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            echo "nchan.sh: nginx $pid ignored TERM for 5 s; killing it" >&2
            kill -KILL "$pid" ${worker:+"$worker"} 2>/dev/null || true
        fi
        echo "stopped pid $pid"
    else
        echo "nchan.sh: not running (prefix $prefix)" >&2
    fi
    # Only ever remove a directory this script made.
    if [[ -f "$prefix/.pushbench-nchan" ]]; then
        rm -rf "$prefix"
    fi
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) usage ;;
esac
