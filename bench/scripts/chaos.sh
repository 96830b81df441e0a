#!/usr/bin/env bash
# The chaos campaign's faults, and the campaign itself on a private stack:
#
#   bench/scripts/chaos.sh fault DIR NAME   one fault on the deployment in DIR (bench/scripts/deploy.sh):
#                                           access, logic, msg_job, register, manager, gateway: kill -9
#                                           the service (access-0, msg_job-0 for access, msg_job) and
#                                           start it again at once from DIR/<service>.cmd, as systemd's
#                                           Restart= would; etcd, redis, kafka, mongo: scripts/stack
#                                           restart (stop, start on the same data, wait until it answers)
#   bench/scripts/chaos.sh campaign OUT SECONDS PAIRS RATE [FAULT_EVERY]
#                                           a private stack (OUT/stack, its own ports) and deployment
#                                           (OUT/deploy, 2 access nodes, a gateway), then
#                                           `fishchat-bench chaos` with every fault, the report in OUT;
#                                           everything is stopped at the end (binaries from BIN,
#                                           default target/release; FAULTS, comma-separated, sets the
#                                           faults' order, default access,logic,msg_job,register,manager,
#                                           gateway,kafka,redis,mongo,etcd)
#
# The campaign's stack is its own so that restarting Kafka or etcd disturbs no one else's tests
# (and their load does not disturb the campaign). Ports: etcd 22379/22380, Redis 26379, Kafka
# 29092/29093, MongoDB-protocol 27117; services from BASE_PORT 23300.
set -euo pipefail

usage() {
    echo "usage: $0 fault DIR NAME | campaign OUT SECONDS PAIRS RATE [FAULT_EVERY]" >&2
    exit 2
}
[[ $# -ge 1 ]] || usage
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)

# fault DIR NAME
fault() {
    local dir=$1 name=$2 svc pid
    case $name in
        etcd | redis | kafka | mongo)
            exec "$repo/scripts/stack" restart "$name"
            ;;
        access | msg_job) svc=$name-0 ;;
        logic | register | manager | gateway) svc=$name ;;
        *)
            echo "unknown fault '$name'" >&2
            exit 2
            ;;
    esac
    [[ -f $dir/$svc.pid && -f $dir/$svc.cmd ]] || { echo "no $svc.pid or $svc.cmd in $dir" >&2; exit 1; }
    pid=$(tr -dc '0-9' <"$dir/$svc.pid")
    [[ -n $pid ]] || { echo "$dir/$svc.pid holds no pid" >&2; exit 1; }
    kill -9 "$pid" 2>/dev/null || true
    # Until the kernel released it (and its ports); 5 s at most.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "$svc (pid $pid) survived kill -9" >&2; exit 1; }
    echo "=== $(date -Is) chaos.sh: killed -9, starting again" >>"$dir/$svc.log"
    # An access node holds a file per connection: the hard limit, as deploy.sh gives it.
    ulimit -n "$(ulimit -Hn)"
    # exec: the pid written is the service's own (bash -> env -> the binary, one process).
    bash -c "exec $(cat "$dir/$svc.cmd")" </dev/null >>"$dir/$svc.log" 2>&1 &
    echo $! >"$dir/$svc.pid"
}

# campaign OUT SECONDS PAIRS RATE [FAULT_EVERY]
campaign() {
    local out=$1 seconds=$2 pairs=$3 rate=$4 every=${5:-}
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    export FISHCHAT_STACK_DIR=$out/stack FISHCHAT_ETCD_PORT=22379 FISHCHAT_ETCD_PEER_PORT=22380 \
        FISHCHAT_REDIS_PORT=26379 FISHCHAT_KAFKA_PORT=29092 FISHCHAT_KAFKA_CONTROLLER_PORT=29093 \
        FISHCHAT_MONGO_PORT=27117
    export FISHCHAT_ETCD=127.0.0.1:22379 FISHCHAT_REDIS=redis://127.0.0.1:26379 \
        FISHCHAT_KAFKA=127.0.0.1:29092 FISHCHAT_MONGO="mongodb://127.0.0.1:27117/?directConnection=true"
    export BASE_PORT=${BASE_PORT:-23300}
    local faults=${FAULTS:-access,logic,msg_job,register,manager,gateway,kafka,redis,mongo,etcd}
    # Ten faults, evenly spread, the last window as long as the others.
    [[ -n $every ]] || every=$(awk -v s="$seconds" 'BEGIN { printf "%.1f", s / 11 }')
    cd "$repo"
    # shellcheck disable=SC2064 # $out is expanded now: it is local to this function
    trap "bench/scripts/deploy.sh down '$out/deploy' || true; scripts/stack down || true" EXIT
    scripts/stack up
    bench/scripts/deploy.sh up "$out/deploy" 2 >/dev/null
    # shellcheck disable=SC1091 # written by deploy.sh
    source "$out/deploy/env"
    ulimit -n 20000
    "${BIN:-target/release}/fishchat-bench" --out-dir "$out" chaos --gateway "$GATEWAY" --register "$REGISTER" \
        --pairs "$pairs" --rate "$rate" --seconds "$seconds" --user-prefix "chaos-$(date +%s)" \
        --faults "$faults" --fault-every "$every" --deploy-dir "$out/deploy" \
        --pid-dir "$out/deploy" --pid-dir "$out/stack/run" 2>&1 | tee "$out/chaos.log"
}

case $1 in
    fault)
        [[ $# -eq 3 ]] || usage
        fault "$2" "$3"
        ;;
    campaign)
        [[ $# -eq 5 || $# -eq 6 ]] || usage
        campaign "${@:2}"
        ;;
    *) usage ;;
esac
