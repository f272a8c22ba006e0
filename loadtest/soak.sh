#!/usr/bin/env bash
# The soak drill: three nodes of one city over Redis, on a ScyllaDB (or Apache Cassandra) store;
# the harness plays the city against nodes a and b for --minutes while node c is killed
# (kill -9) every --every-s seconds and started again --down-s later, so c's zones are taken
# over by a and b and handed back to c, again and again, under load. Then `tomato audit` checks
# every order a node acknowledged against the store: stored, paid, delivered, each step once.
#
#   cargo build --release -p tomato -p tomato-load
#   loadtest/soak.sh --cql 127.0.0.1:9042 [--minutes 10] [--every-s 120] [--down-s 20] \
#     [--redis-port 6391] [-- more tomato-load run arguments]
#
# It starts its own redis-server (on the PATH) on --redis-port and a fresh keyspace; the run's
# logs, report and order ids go to a new directory it names. Exit status 0 only when every
# order was delivered and the audit is clean.
set -euo pipefail
cd "$(dirname "$0")/.."

cql="" minutes=10 every=120 down=20 redis_port=6391
bin=${TOMATO_BIN_DIR:-target/release}
while [ $# -gt 0 ]; do
  case "$1" in
    --cql) cql=$2; shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --every-s) every=$2; shift 2 ;;
    --down-s) down=$2; shift 2 ;;
    --redis-port) redis_port=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "soak: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$cql" ] || { echo "soak: --cql HOST:PORT of a ScyllaDB or Cassandra is required" >&2; exit 2; }
for b in tomato tomato-load; do
  [ -x "$bin/$b" ] || { echo "soak: $bin/$b missing: cargo build --release -p tomato -p tomato-load" >&2; exit 2; }
done
command -v redis-server >/dev/null || { echo "soak: redis-server is not on the PATH (Debian: redis-server)" >&2; exit 2; }

out=$(mktemp -d -t tomato-soak.XXXXXX)
keyspace="soak_$(date +%s)"
echo "soak: logs, report and order ids in $out; keyspace $keyspace"
ulimit -n "$(ulimit -Hn)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

redis-server --port "$redis_port" --save '' --appendonly no > "$out/redis.log" 2>&1 &
pids+=($!)

# The environment every node shares: the store, the cluster, zones fine enough that a city's
# zones land on every node, the harness's account as admin and the limits a load test exceeds.
export TOMATO_STORE__BACKEND=scylla TOMATO_STORE__SCYLLA__NODES=$cql \
  TOMATO_STORE__SCYLLA__KEYSPACE=$keyspace \
  TOMATO_CLUSTER__REDIS_URL=redis://127.0.0.1:$redis_port TOMATO_SHARDS__ZONE_RESOLUTION=7 \
  TOMATO_AUTH__ADMIN_EMAILS=admin@load.tomato.test TOMATO_LIMITS__SIGN_IN_PER_MINUTE=1000000 \
  TOMATO_LIMITS__POSITIONS_PER_SECOND=1000000 TOMATO_LIMITS__POSITIONS_BURST=1000000 \
  TOMATO_LIMITS__ORDERS_PER_MINUTE=1000000 TOMATO_LIMITS__PAYMENTS_PER_MINUTE=1000000 \
  TOMATO_LOG__FILTER=warn

# Starts node $1 on port $2 (appending to its log) and waits until it is ready.
start() {
  TOMATO_CLUSTER__NODE_ID=node-$1 TOMATO_SERVER__BIND=127.0.0.1:$2 \
    TOMATO_STORE__DATA_DIR=$out/data-$1 "$bin/tomato" serve >> "$out/node-$1.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$2/readyz" > /dev/null && return 0
    sleep 1
  done
  echo "soak: node $1 did not get ready; see $out/node-$1.log" >&2
  exit 1
}
start a 18081; pids+=("$node_pid")
start b 18082; pids+=("$node_pid")
start c 18083; c_pid=$node_pid

"$bin/tomato-load" run --target http://127.0.0.1:18081 --target http://127.0.0.1:18082 \
  --duration-s $((minutes * 60)) --orders-out "$out/orders.txt" --json "$@" \
  > "$out/report.json" 2> "$out/harness.log" &
harness=$!

# Kill node c every $every seconds, and start it again $down seconds later.
elapsed=0 kills=0
while kill -0 "$harness" 2>/dev/null && [ $((elapsed + every)) -le $((minutes * 60)) ]; do
  sleep "$every"; elapsed=$((elapsed + every))
  kill -9 "$c_pid"; kills=$((kills + 1))
  echo "soak: $(date +%T) node c killed (kill -9 number $kills)"
  sleep "$down"; elapsed=$((elapsed + down))
  start c 18083; c_pid=$node_pid
  echo "soak: $(date +%T) node c started again"
done
pids+=("$c_pid")
harness_rc=0
wait "$harness" || harness_rc=$?
echo "soak: harness exited $harness_rc after $kills kills of node c; report in $out/report.json"

if ! grep -q '"undelivered": 0,' "$out/report.json"; then
  echo "soak: orders left undelivered; see $out/report.json" >&2
  harness_rc=1
fi

audit_rc=0
"$bin/tomato" audit "$out/orders.txt" || audit_rc=$?
[ "$harness_rc" = 0 ] && [ "$audit_rc" = 0 ]
