#!/usr/bin/env bash
# Starts or stops a private mosquitto for the bench's MQTT baselines (never the
# system service): `mosquitto.sh start PORT DIR` writes DIR/mosquitto.conf,
# starts the broker in the background under `ulimit -n 20000` listening on
# 127.0.0.1:PORT, waits until the port accepts, and prints its pid (also in
# DIR/mosquitto.pid); `mosquitto.sh stop PORT DIR` stops that pid.
# Installs the Debian package when the binary is missing.
set -euo pipefail

usage() { echo "usage: $0 start|stop PORT DIR" >&2; exit 2; }
[[ $# -eq 3 ]] || usage
action=$1 port=$2 dir=$3
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile=$dir/mosquitto.pid

case $action in
start)
    if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
        apt-get install -y mosquitto >/dev/null
    fi
    bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
set_tcp_nodelay true
connection_messages false
log_dest file $dir/mosquitto.log
log_type error
log_type warning
log_type notice
user $(id -un)
CONF
    ulimit -n 20000
    "$bin" -c "$dir/mosquitto.conf" </dev/null >>"$dir/mosquitto.out" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            cat "$pidfile"
            exit 0
        fi
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "mosquitto exited; see $dir/mosquitto.out and $dir/mosquitto.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "mosquitto is not listening on 127.0.0.1:$port after 10 s" >&2
    exit 1
    ;;
stop)
    [[ -f $pidfile ]] || { echo "no $pidfile" >&2; exit 1; }
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; exit 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    ;;
*) usage ;;
esac
