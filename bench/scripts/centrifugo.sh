#!/usr/bin/env bash
# Starts or stops a private Centrifugo for the bench's Centrifugo baselines:
# `centrifugo.sh start PORT DIR` writes DIR/config.json (anonymous clients
# allowed to subscribe to any channel, server API key `fishchat-bench`, no
# history, logs at warn), starts the server in the background under
# `ulimit -n 20000` on 127.0.0.1:PORT, waits until the port accepts, and
# prints its pid (also in DIR/centrifugo.pid); `centrifugo.sh stop PORT DIR`
# stops that pid. `centrifugo.sh install` only installs.
# Installs Centrifugo CENTRIFUGO_VERSION (default v6.9.1) with `go install` from
# the Go module proxy into FISHCHAT_TOOLS_DIR/bin (default
# ~/.cache/fishchat/tools/bin) when it is missing: a few minutes, once.
set -euo pipefail

version=${CENTRIFUGO_VERSION:-v6.9.1}
tools=${FISHCHAT_TOOLS_DIR:-$HOME/.cache/fishchat/tools}
bin=$tools/bin/centrifugo-$version

usage() { echo "usage: $0 install | start|stop PORT DIR" >&2; exit 2; }

install() {
    [[ -x $bin ]] && return 0
    command -v go >/dev/null || { echo "centrifugo.sh: Go is needed to build Centrifugo" >&2; exit 1; }
    local build
    build=$(mktemp -d)
    echo "centrifugo.sh: building Centrifugo $version with go install (a few minutes, once)" >&2
    (cd "$build" && GOBIN="$build/bin" go install "github.com/centrifugal/centrifugo/v6@$version") >&2
    mkdir -p "$tools/bin"
    mv "$build/bin/centrifugo" "$bin"
    rm -rf "$build"
}

[[ $# -ge 1 ]] || usage
action=$1
if [[ $action == install ]]; then
    install
    exit 0
fi
[[ $# -eq 3 ]] || usage
port=$2 dir=$3
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile=$dir/centrifugo.pid

case $action in
start)
    install
    cat >"$dir/config.json" <<CONF
{
  "http_server": { "address": "127.0.0.1", "port": $port },
  "log": { "level": "warn" },
  "client": { "insecure": true },
  "http_api": { "key": "fishchat-bench" },
  "health": { "enabled": true }
}
CONF
    ulimit -n 20000
    "$bin" --config "$dir/config.json" </dev/null >>"$dir/centrifugo.out" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            cat "$pidfile"
            exit 0
        fi
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "centrifugo exited; see $dir/centrifugo.out" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "centrifugo is not listening on 127.0.0.1:$port after 10 s" >&2
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
