#!/usr/bin/env bash
# One city on N nodes: how a cluster spreads the work. Starts N nodes over a Redis of its own
# (N > 1) or one node alone, on a ScyllaDB (or Apache Cassandra) store, plays the city against
# every node with the harness, then prints each node's CPU seconds and share, their sum, and
# Redis's CPU. Run it for 1 and for 3 nodes with the same harness arguments, in the same
# sitting, and compare the sums: what the cluster costs beyond one node's work.
#
#   cargo build --release -p tomato -p tomato-load
#   loadtest/spread.sh --cql 127.0.0.1:9042 --nodes 3 [--redis-port 6392] \
#     [-- more tomato-load run arguments]
#
# TOMATO_SHARDS__ZONE_RESOLUTION and any other TOMATO_ setting pass through to the nodes. The
# logs, the harness's JSON report, `cpu.txt`, each node's `/metrics` at the end and Redis's
# `INFO` go to a new directory it names.
set -euo pipefail
cd "$(dirname "$0")/.."

cql="" count=1 redis_port=6392
bin=${TOMATO_BIN_DIR:-target/release}
while [ $# -gt 0 ]; do
  case "$1" in
    --cql) cql=$2; shift 2 ;;
    --nodes) count=$2; shift 2 ;;
    --redis-port) redis_port=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "spread: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$cql" ] || { echo "spread: --cql HOST:PORT of a ScyllaDB or Cassandra is required" >&2; exit 2; }
[ "$count" -ge 1 ] 2>/dev/null || { echo "spread: --nodes takes a count of at least 1" >&2; exit 2; }
. loadtest/nodes.sh
nodes_check

nodes_out spread

redis_pid=""
if [ "$count" -gt 1 ]; then
  nodes_redis "$redis_port"; pids+=("$redis_pid")
  nodes_env "$keyspace" "$redis_port"
else
  nodes_env "$keyspace"
fi
targets=()
urls=()
node_pids=()
for i in $(seq 1 "$count"); do
  nodes_start "$i" $((18180 + i))
  pids+=("$node_pid"); node_pids+=("$node_pid")
  urls+=("http://127.0.0.1:$((18180 + i))")
  targets+=(--target "${urls[-1]}")
done

"$bin/tomato-load" run "${targets[@]}" --json "$@" > "$out/report.json" 2> "$out/harness.log" \
  || { echo "spread: the harness failed; see $out/harness.log" >&2; exit 1; }

# Each node's counters and Redis's, kept beside the report: what the CPU below was spent on
# (positions replicated, room events heard, remote calls; Redis's messages and commands).
for i in "${!urls[@]}"; do
  curl -sf "${urls[$i]}/metrics" > "$out/metrics-$((i + 1)).txt" || true
done
[ -z "$redis_pid" ] || redis-cli -p "$redis_port" info all > "$out/redis-info.txt" 2>&1 || true

# Each node's CPU over the whole run (start-up, the harness's setup and the play), read once.
cpus=()
for pid in "${node_pids[@]}"; do cpus+=("$(nodes_cpu_s "$pid")"); done
redis_cpu=""
[ -z "$redis_pid" ] || redis_cpu=$(nodes_cpu_s "$redis_pid")
awk -v cpus="${cpus[*]}" -v redis="$redis_cpu" 'BEGIN {
  n = split(cpus, cpu, " ")
  for (i = 1; i <= n; i++) total += cpu[i]
  for (i = 1; i <= n; i++) printf "node-%d cpu_s %.1f share %.2f\n", i, cpu[i], cpu[i] / total
  printf "nodes cpu_s %.1f\n", total
  if (redis != "") printf "redis cpu_s %s\n", redis
}' | tee "$out/cpu.txt"
