#!/usr/bin/env bash
# The soak drill: three nodes of one city over Redis, on a ScyllaDB (or Apache Cassandra) store;
# the harness plays the city against all three for --minutes while one of them is killed
# (kill -9) every --every-s seconds, c, then b, then a, and so on, and started again --down-s
# later: the dead node's zones are taken over by the others and handed back, its riders' and
# sellers' sockets dial another node, and its parties' calls go to the next node (a call whose
# answer died with the node is tried again where that is safe), again and again, under load.
# Then `tomato audit` checks every order a node acknowledged against the store: stored, paid,
# delivered, each step once; and `tomato-load check` holds what every client was told (the run's
# history) against the orders as the nodes hold them.
#
#   cargo build --release -p tomato -p tomato-load
#   loadtest/soak.sh --cql 127.0.0.1:9042 [--minutes 10] [--every-s 120] [--down-s 20] \
#     [--redis-port 6391] [-- more tomato-load run arguments]
#
# It starts its own redis-server (on the PATH) on --redis-port and a fresh keyspace; the run's
# logs, report and order ids go to a new directory it names. Exit status 0 only when every
# order was delivered and both the audit and the check are clean.
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
names=(a b c) ports=(18081 18082 18083) node_pids=()
trap 'kill "${pids[@]}" "${node_pids[@]}" 2>/dev/null || true' EXIT
for i in 0 1 2; do
  nodes_start "${names[$i]}" "${ports[$i]}"; node_pids+=("$node_pid")
done

"$bin/tomato-load" run --target http://127.0.0.1:18081 --target http://127.0.0.1:18082 \
  --target http://127.0.0.1:18083 \
  --duration-s $((minutes * 60)) --orders-out "$out/orders.txt" --history "$out/history.jsonl" \
  --json "$@" \
  > "$out/report.json" 2> "$out/harness.log" &
harness=$!

# Every $every seconds kill the next node (c, b, a, c, ...) and start it again $down seconds later.
elapsed=0 kills=0
while kill -0 "$harness" 2>/dev/null && [ $((elapsed + every)) -le $((minutes * 60)) ]; do
  sleep "$every"; elapsed=$((elapsed + every))
  i=$(( (2 - kills % 3) ))
  kill -9 "${node_pids[$i]}"; kills=$((kills + 1))
  echo "soak: $(date +%T) node ${names[$i]} killed (kill -9 number $kills)"
  sleep "$down"; elapsed=$((elapsed + down))
  nodes_start "${names[$i]}" "${ports[$i]}"; node_pids[$i]=$node_pid
  echo "soak: $(date +%T) node ${names[$i]} started again"
done
harness_rc=0
wait "$harness" || harness_rc=$?
echo "soak: harness exited $harness_rc after $kills kills; report in $out/report.json"

if ! grep -q '"undelivered": 0,' "$out/report.json"; then
  echo "soak: orders left undelivered; see $out/report.json" >&2
  harness_rc=1
fi

audit_rc=0
"$bin/tomato" audit "$out/orders.txt" || audit_rc=$?
check_rc=0
"$bin/tomato-load" check "$out/history.jsonl" --target http://127.0.0.1:18081 || check_rc=$?
[ "$harness_rc" = 0 ] && [ "$audit_rc" = 0 ] && [ "$check_rc" = 0 ]
