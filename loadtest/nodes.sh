# Sourced by the drills of this directory (soak.sh, spread.sh): what starting tomato nodes of one
# city takes. The caller sets `bin` (where `tomato` and `tomato-load` are) and `cql` (HOST:PORT
# of a ScyllaDB or Cassandra), then calls the functions below.

# Stops with one line when a binary or redis-server is missing.
nodes_check() {
  local b
  for b in tomato tomato-load; do
    [ -x "$bin/$b" ] || { echo "$0: $bin/$b missing: cargo build --release -p tomato -p tomato-load" >&2; exit 2; }
  done
  command -v redis-server >/dev/null || { echo "$0: redis-server is not on the PATH (Debian: redis-server)" >&2; exit 2; }
}

# The run's directory (`out`, new, named on stdout), a fresh keyspace (`keyspace`), the open-file
# limit a socket run needs, and the processes (`pids`) killed when the drill exits. $1 names the
# drill.
nodes_out() {
  out=$(mktemp -d -t "tomato-$1.XXXXXX")
  keyspace="$1_$(date +%s)"
  echo "$1: logs and report in $out; keyspace $keyspace"
  ulimit -n "$(ulimit -Hn)"
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
}

# Starts a redis-server of the run's own on port $1; its pid in `redis_pid`.
nodes_redis() {
  redis-server --port "$1" --save '' --appendonly no > "$out/redis.log" 2>&1 &
  redis_pid=$!
}

# The environment every node shares: the store (a fresh keyspace $1), the harness's account as
# admin and the limits a load test exceeds. $2, when given, is the Redis port of a cluster.
nodes_env() {
  export TOMATO_STORE__BACKEND=scylla TOMATO_STORE__SCYLLA__NODES=$cql \
    TOMATO_STORE__SCYLLA__KEYSPACE=$1 \
    TOMATO_AUTH__ADMIN_EMAILS=admin@load.tomato.test TOMATO_LIMITS__SIGN_IN_PER_MINUTE=1000000 \
    TOMATO_LIMITS__POSITIONS_PER_SECOND=1000000 TOMATO_LIMITS__POSITIONS_BURST=1000000 \
    TOMATO_LIMITS__ORDERS_PER_MINUTE=1000000 TOMATO_LIMITS__PAYMENTS_PER_MINUTE=1000000 \
    TOMATO_LOG__FILTER=warn
  if [ -n "${2:-}" ]; then
    export TOMATO_CLUSTER__REDIS_URL=redis://127.0.0.1:$2
  fi
}

# Starts node $1 on port $2 (appending to its log) and waits until it is ready; its pid in
# `node_pid`.
nodes_start() {
  TOMATO_CLUSTER__NODE_ID=node-$1 TOMATO_SERVER__BIND=127.0.0.1:$2 \
    TOMATO_STORE__DATA_DIR=$out/data-$1 "$bin/tomato" serve >> "$out/node-$1.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$2/readyz" > /dev/null && return 0
    sleep 1
  done
  echo "$0: node $1 did not get ready; see $out/node-$1.log" >&2
  exit 1
}

# CPU seconds (user + system) process $1 has used so far, from /proc.
nodes_cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$1/stat"
}
