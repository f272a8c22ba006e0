#!/usr/bin/env bash
# One city on N nodes: how a cluster spreads the work. Starts N nodes over a Redis of its own
# (N > 1) or one node alone, on a ScyllaDB (or Apache Cassandra) store, plays the city against
# every node with the harness, then prints each node's CPU seconds and share (over the whole
# run, and in the play alone), their sums, and Redis's CPU. Run it for 1 and for 3 nodes with
# the same harness arguments, in the same sitting, and compare the play sums: what the cluster
# costs beyond one node's work.
#
#   cargo build --release -p tomato -p tomato-load
#   loadtest/spread.sh --cql 127.0.0.1:9042 --nodes 3 [--redis-port 6392] [--apart] \
#     [-- more tomato-load run arguments]
#
# `--apart` is the floor a cluster is measured against: N nodes that know nothing of each other
# (no Redis, a keyspace each), each played by a harness of its own with an Nth of the riders,
# customers, restaurants and order rate. What N processes cost beyond one on the same machine
# with no cluster work at all; the cluster's own cost is what it spends beyond that.
#
# TOMATO_SHARDS__ZONE_RESOLUTION and any other TOMATO_ setting pass through to the nodes. The
# logs, the harness's JSON report, `cpu.txt`, each node's `/metrics` at the end and Redis's
# `INFO` go to a new directory it names.
set -euo pipefail
cd "$(dirname "$0")/.."

cql="" count=1 redis_port=6392 apart=""
bin=${TOMATO_BIN_DIR:-target/release}
while [ $# -gt 0 ]; do
  case "$1" in
    --cql) cql=$2; shift 2 ;;
    --nodes) count=$2; shift 2 ;;
    --redis-port) redis_port=$2; shift 2 ;;
    --apart) apart=1; shift ;;
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
if [ -n "$apart" ]; then
  : # every node alone: no Redis, a keyspace each (below)
elif [ "$count" -gt 1 ]; then
  nodes_redis "$redis_port"; pids+=("$redis_pid")
  nodes_env "$keyspace" "$redis_port"
else
  nodes_env "$keyspace"
fi
targets=()
urls=()
node_pids=()
for i in $(seq 1 "$count"); do
  [ -z "$apart" ] || nodes_env "${keyspace}_$i"
  nodes_start "$i" $((18180 + i))
  pids+=("$node_pid"); node_pids+=("$node_pid")
  urls+=("http://127.0.0.1:$((18180 + i))")
  targets+=(--target "${urls[-1]}")
done

reports=()
if [ -z "$apart" ]; then
  reports+=("$out/report.json")
  "$bin/tomato-load" run "${targets[@]}" --json "$@" > "$out/report.json" 2> "$out/harness.log" \
    || { echo "spread: the harness failed; see $out/harness.log" >&2; exit 1; }
else
  # The harness's arguments with the city's counts and rate divided among the nodes, and a seed
  # of its own for each.
  share() {
    local i=$1 args=() value; shift
    while [ $# -gt 0 ]; do
      case "$1" in
        --riders|--customers|--restaurants)
          value=$(( ($2 + count - 1) / count )); args+=("$1" "$value"); shift 2 ;;
        --order-rate) args+=("$1" "$(awk -v r="$2" -v n="$count" 'BEGIN { print r / n }')"); shift 2 ;;
        --seed) args+=("$1" $(( $2 + i ))); shift 2 ;;
        *) args+=("$1"); shift ;;
      esac
    done
    printf '%s\n' "${args[@]}"
  }
  harnesses=()
  for i in $(seq 1 "$count"); do
    mapfile -t mine < <(share "$i" "$@")
    reports+=("$out/report-$i.json")
    "$bin/tomato-load" run --target "${urls[$((i - 1))]}" --json "${mine[@]}" \
      > "$out/report-$i.json" 2> "$out/harness-$i.log" &
    harnesses+=($!)
  done
  for i in "${!harnesses[@]}"; do
    wait "${harnesses[$i]}" \
      || { echo "spread: harness $((i + 1)) failed; see $out/harness-$((i + 1)).log" >&2; exit 1; }
  done
fi

# Each node's counters and Redis's, kept beside the report: what the CPU below was spent on
# (positions replicated, room events heard, remote calls; Redis's messages and commands).
for i in "${!urls[@]}"; do
  curl -sf "${urls[$i]}/metrics" > "$out/metrics-$((i + 1)).txt" || true
done
[ -z "$redis_pid" ] || redis-cli -p "$redis_port" info all > "$out/redis-info.txt" 2>&1 || true

# Each node's CPU over the whole run (start-up, the harness's setup and the play), read once,
# and the harness's split of it (its report's `cpuS`, the play, and `setupCpuS`): the play is
# the city's work, the setup (creating the city, connecting its parties) the harness's.
cpus=()
for pid in "${node_pids[@]}"; do cpus+=("$(nodes_cpu_s "$pid")"); done
plays=$(cat "${reports[@]}" | grep -o '"cpuS": *[0-9.eE+-]*' | cut -d: -f2 | tr '\n' ' ')
setups=$(cat "${reports[@]}" | grep -o '"setupCpuS": *[0-9.eE+-]*' | cut -d: -f2 | tr '\n' ' ')
redis_cpu=""
[ -z "$redis_pid" ] || redis_cpu=$(nodes_cpu_s "$redis_pid")
awk -v cpus="${cpus[*]}" -v plays="$plays" -v setups="$setups" -v redis="$redis_cpu" 'BEGIN {
  n = split(cpus, cpu, " "); split(plays, play, " "); split(setups, setup, " ")
  for (i = 1; i <= n; i++) { total += cpu[i]; play_total += play[i]; setup_total += setup[i] }
  for (i = 1; i <= n; i++)
    printf "node-%d cpu_s %.1f share %.2f play_s %.1f play_share %.2f setup_s %.1f\n", i, cpu[i],
      cpu[i] / total, play[i], play[i] / (play_total > 0 ? play_total : 1), setup[i]
  printf "nodes cpu_s %.1f play_s %.1f setup_s %.1f\n", total, play_total, setup_total
  if (redis != "") printf "redis cpu_s %s\n", redis
}' | tee "$out/cpu.txt"
