#!/usr/bin/env bash
# A private FishChat deployment for one bench run, on servers that are already running:
#
#   bench/scripts/deploy.sh up DIR [ACCESS_NODES]   start register, manager, logic, MSG_JOBS (env,
#                                                  default 1) msg_job instances, ACCESS_NODES
#                                                  (default 1) access nodes and a gateway
#   bench/scripts/deploy.sh down DIR                stop them (SIGTERM, then SIGKILL)
#
# Everything is named after DIR's base name (etcd namespace, Redis key prefix, MongoDB database,
# Kafka topics and consumer group), so runs never see each other's data. Register hashes with a
# cheap argon2 cost so that tens of thousands of bench accounts take seconds. Each access node gets
# `ulimit -n` at the hard limit. Writes DIR/env, to `source`: REGISTER, ACCESS (comma-separated
# client addresses), PUSH (the first node's Push gRPC), ACCESS_PIDS (space-separated),
# ACCESS_METRICS (comma-separated), GATEWAY (the gateway's TCP address), CPU_ARGS (`--cpu NAME=PID` for each service and each server
# of the stack in FISHCHAT_STACK_DIR, default .stack), and DIR/<service>.log, .pid and .cmd (the
# service's command line, which bench/scripts/chaos.sh runs again to restart it).
#
# Servers from the environment, as the tests read them: FISHCHAT_ETCD (host:port, default
# 127.0.0.1:2379), FISHCHAT_REDIS (redis://127.0.0.1:6379), FISHCHAT_KAFKA (127.0.0.1:9092),
# FISHCHAT_MONGO (mongodb://127.0.0.1:27017/?directConnection=true). Binaries from BIN (default
# target/release). Ports from BASE_PORT (default 17300): services BASE+10.., msg_job j BASE+1100+j, access node k
# (0-based) clients BASE+40+10k, gRPC BASE+41+10k, metrics BASE+2041+10k, gateway TCP BASE+1200,
# HTTP BASE+1201, gRPC BASE+1202; the other services' metrics BASE+3010 (register), +3020 (manager),
# +3030 (logic), +3100+j (msg_job j), +3200 (gateway).
#
# CLIENT_TLS (comma-separated access node numbers, 0-based, e.g. `1`) gives those nodes TLS on the
# client port, with a certificate for 127.0.0.1 and localhost from scripts/certs in DIR/certs; DIR/env
# then also has TLS_CA (the CA file clients trust, `fishchat-bench idle --tls-ca $TLS_CA`).
set -euo pipefail

usage() { echo "usage: $0 up DIR [ACCESS_NODES] | down DIR" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
action=$1 dir=$2 nodes=${3:-1}
[[ $nodes =~ ^[1-9][0-9]*$ ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
name=$(basename "$dir" | tr -c 'a-zA-Z0-9\n' '-')

stop_all() {
    local f pid
    for f in "$dir"/*.pid; do
        [[ -e $f ]] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
    done
    for f in "$dir"/*.pid; do
        [[ -e $f ]] || continue
        pid=$(cat "$f")
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$f"
    done
}

if [[ $action == down ]]; then
    stop_all
    exit 0
fi
[[ $action == up ]] || usage

bin=${BIN:-target/release}
base=${BASE_PORT:-17300}
etcd=${FISHCHAT_ETCD:-127.0.0.1:2379}
redis=${FISHCHAT_REDIS:-redis://127.0.0.1:6379}
kafka=${FISHCHAT_KAFKA:-127.0.0.1:9092}
mongo=${FISHCHAT_MONGO:-mongodb://127.0.0.1:27017/?directConnection=true}
export FISHCHAT_ETCD_NAMESPACE=/$name
etcd_list="[\"$etcd\"]"

# Every port must be free before anything starts: the access node's client port is opened with
# SO_REUSEPORT, so a leftover node on it would silently share the clients.
ports=($((base + 10)) $((base + 1010)) $((base + 20)) $((base + 30)) $((base + 1200)) $((base + 1201)) $((base + 1202)))
for ((j = 0; j < ${MSG_JOBS:-1}; j++)); do ports+=($((base + 1100 + j))); done
for ((k = 0; k < nodes; k++)); do ports+=($((base + 40 + 10 * k)) $((base + 41 + 10 * k)) $((base + 2041 + 10 * k))); done
for port in "${ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use: stop the deployment holding it (deploy.sh down ITS_DIR) or set BASE_PORT" >&2
        exit 1
    fi
done

# start <service> <binary> VAR=value...: in the background, logging to DIR/<service>.log. The
# command line goes to DIR/<service>.cmd (absolute binary, the namespace included) so that a
# restart runs exactly the same service.
start() {
    local svc=$1 binary=$2
    shift 2
    printf '%q ' env "FISHCHAT_ETCD_NAMESPACE=$FISHCHAT_ETCD_NAMESPACE" "$@" \
        "$(realpath "$bin/$binary")" >"$dir/$svc.cmd"
    env "$@" "$bin/$binary" </dev/null >>"$dir/$svc.log" 2>&1 &
    echo $! >"$dir/$svc.pid"
}

# wait_port <service> <port>: until 127.0.0.1:<port> accepts (60 s), or the service died.
wait_port() {
    local svc=$1 port=$2
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$(cat "$dir/$svc.pid")" 2>/dev/null || { echo "$svc exited; see $dir/$svc.log" >&2; stop_all; exit 1; }
        sleep 0.1
    done
    echo "$svc does not listen on $port after 60 s; see $dir/$svc.log" >&2
    stop_all
    exit 1
}

start register fishchat-register \
    FISHCHAT_REGISTER_GRPC_LISTEN=127.0.0.1:$((base + 10)) FISHCHAT_REGISTER_HTTP_LISTEN=127.0.0.1:$((base + 1010)) \
    FISHCHAT_REGISTER_METRICS_LISTEN=127.0.0.1:$((base + 3010)) \
    FISHCHAT_REGISTER_NODE_ID="$name-register" FISHCHAT_REGISTER_ETCD_ENDPOINTS="$etcd_list" \
    FISHCHAT_REGISTER_REDIS_URL="$redis" FISHCHAT_REGISTER_KEY_PREFIX="$name:" \
    FISHCHAT_REGISTER_MONGO_URL="$mongo" FISHCHAT_REGISTER_DATABASE="$name" \
    FISHCHAT_REGISTER_ARGON2_MEMORY_KIB=1024 FISHCHAT_REGISTER_ARGON2_ITERATIONS=1 \
    FISHCHAT_REGISTER_MANAGER_ADDR=http://127.0.0.1:$((base + 20))
start manager fishchat-manager \
    FISHCHAT_MANAGER_GRPC_LISTEN=127.0.0.1:$((base + 20)) FISHCHAT_MANAGER_NODE_ID="$name-manager" \
    FISHCHAT_MANAGER_METRICS_LISTEN=127.0.0.1:$((base + 3020)) \
    FISHCHAT_MANAGER_ETCD_ENDPOINTS="$etcd_list" FISHCHAT_MANAGER_MONGO_URL="$mongo" FISHCHAT_MANAGER_DATABASE="$name"
start logic fishchat-logic \
    FISHCHAT_LOGIC_GRPC_LISTEN=127.0.0.1:$((base + 30)) FISHCHAT_LOGIC_NODE_ID="$name-logic" \
    FISHCHAT_LOGIC_METRICS_LISTEN=127.0.0.1:$((base + 3030)) \
    FISHCHAT_LOGIC_ETCD_ENDPOINTS="$etcd_list" FISHCHAT_LOGIC_REDIS_URL="$redis" FISHCHAT_LOGIC_KEY_PREFIX="$name:" \
    FISHCHAT_LOGIC_KAFKA_BROKERS="$kafka" FISHCHAT_LOGIC_P2P_TOPIC="$name.p2p" FISHCHAT_LOGIC_GROUP_TOPIC="$name.group"
wait_port register $((base + 1010))
wait_port manager $((base + 20))
wait_port logic $((base + 30))
# MSG_JOBS instances (default 1) share the topics' partitions as one consumer group.
for ((j = 0; j < ${MSG_JOBS:-1}; j++)); do
    start "msg_job-$j" fishchat-msg-job \
        FISHCHAT_MSG_JOB_GRPC_LISTEN=127.0.0.1:$((base + 1100 + j)) FISHCHAT_MSG_JOB_NODE_ID="$name-msg-job-$j" \
        FISHCHAT_MSG_JOB_METRICS_LISTEN=127.0.0.1:$((base + 3100 + j)) \
        FISHCHAT_MSG_JOB_ETCD_ENDPOINTS="$etcd_list" FISHCHAT_MSG_JOB_REGISTER_ADDR=http://127.0.0.1:$((base + 10)) \
        FISHCHAT_MSG_JOB_KAFKA_BROKERS="$kafka" FISHCHAT_MSG_JOB_GROUP_ID="$name-msg-job" \
        FISHCHAT_MSG_JOB_P2P_TOPIC="$name.p2p" FISHCHAT_MSG_JOB_GROUP_TOPIC="$name.group" \
        FISHCHAT_MSG_JOB_MONGO_URL="$mongo" FISHCHAT_MSG_JOB_DATABASE="$name" FISHCHAT_MSG_JOB_REDIS_URL="$redis"
done
ulimit -n "$(ulimit -Hn)"
if [[ -n ${CLIENT_TLS:-} ]]; then
    "$(dirname "$0")/../../scripts/certs" "$dir/certs" >/dev/null
fi
access=() pids=() metrics=()
for ((k = 0; k < nodes; k++)); do
    client=$((base + 40 + 10 * k)) grpc=$((base + 41 + 10 * k)) metric=$((base + 2041 + 10 * k))
    tls=()
    if [[ ,${CLIENT_TLS:-}, == *,$k,* ]]; then
        tls=(FISHCHAT_ACCESS_CLIENT_TLS_CERT="$dir/certs/node.pem" FISHCHAT_ACCESS_CLIENT_TLS_KEY="$dir/certs/node.key")
    fi
    start "access-$k" fishchat-access \
        FISHCHAT_ACCESS_NODE_ID="$name-access-$k" FISHCHAT_ACCESS_ETCD_ENDPOINTS="$etcd_list" \
        FISHCHAT_ACCESS_CLIENT_LISTEN=127.0.0.1:$client FISHCHAT_ACCESS_GRPC_LISTEN=127.0.0.1:$grpc \
        FISHCHAT_ACCESS_METRICS_LISTEN=127.0.0.1:$metric "${tls[@]}"
    access+=("127.0.0.1:$client") metrics+=("127.0.0.1:$metric") pids+=("$(cat "$dir/access-$k.pid")")
done
start gateway fishchat-gateway \
    FISHCHAT_GATEWAY_LISTEN=127.0.0.1:$((base + 1200)) FISHCHAT_GATEWAY_HTTP_LISTEN=127.0.0.1:$((base + 1201)) \
    FISHCHAT_GATEWAY_GRPC_LISTEN=127.0.0.1:$((base + 1202)) FISHCHAT_GATEWAY_NODE_ID="$name-gateway" \
    FISHCHAT_GATEWAY_METRICS_LISTEN=127.0.0.1:$((base + 3200)) \
    FISHCHAT_GATEWAY_ETCD_ENDPOINTS="$etcd_list"
for ((j = 0; j < ${MSG_JOBS:-1}; j++)); do
    wait_port "msg_job-$j" $((base + 1100 + j))
done
wait_port gateway $((base + 1200))
for ((k = 0; k < nodes; k++)); do
    wait_port "access-$k" $((base + 40 + 10 * k))
done
# --cpu NAME=PID for every process of the deployment and every server of the stack
# (FISHCHAT_STACK_DIR's pid files, default .stack), for the chat scenarios' CPU table.
cpu=()
for f in "$dir"/*.pid; do
    cpu+=("--cpu $(basename "$f" .pid)=$(cat "$f")")
done
for server in etcd redis kafka mongo; do
    f=${FISHCHAT_STACK_DIR:-.stack}/run/$server.pid
    [[ -f $f ]] && cpu+=("--cpu $server=$(cat "$f")")
done
{
    echo "CPU_ARGS='${cpu[*]}'"
    echo "REGISTER=http://127.0.0.1:$((base + 1010))"
    echo "ACCESS=$(IFS=,; echo "${access[*]}")"
    echo "PUSH=127.0.0.1:$((base + 41))"
    echo "ACCESS_PIDS='${pids[*]}'"
    echo "ACCESS_METRICS=$(IFS=,; echo "${metrics[*]}")"
    echo "GATEWAY=127.0.0.1:$((base + 1200))"
    echo "NAME=$name"
    if [[ -n ${CLIENT_TLS:-} ]]; then echo "TLS_CA=$dir/certs/ca.pem"; fi
} >"$dir/env"
cat "$dir/env"
