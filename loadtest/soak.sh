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
. loadtest/nodes.sh
nodes_check

nodes_out soak

nodes_redis "$redis_port"; pids+=("$redis_pid")
nodes_env "$keyspace" "$redis_port"
nodes_start a 18081; pids+=("$node_pid")
nodes_start b 18082; pids+=("$node_pid")
nodes_start c 18083; c_pid=$node_pid

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
  nodes_start c 18083; c_pid=$node_pid
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
