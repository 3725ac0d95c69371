#!/usr/bin/env bash
# A Spark standalone cluster on this machine, from the installed pyspark: one master on 127.0.0.1 and
# workers with one core and bounded memory each. pip's pyspark ships no start-master.sh, so the daemons
# are started with spark-class; pids, logs and the workers' work folders live under $CLUSTER_DIR.
#
#   tools/standalone_cluster.sh start     # master spark://127.0.0.1:7077 (UI :8080), 2 workers
#   tools/standalone_cluster.sh status    # alive workers, or exit 1
#   tools/standalone_cluster.sh stop      # the daemons and their executors
#   tools/standalone_cluster.sh submit-args   # --master, --jars (Delta) and the driver's log settings for spark-submit
#
# Settings (environment): SPARKREC_CLUSTER_DIR (.cluster), SPARKREC_MASTER_PORT (7077),
# SPARKREC_MASTER_UI_PORT (8080), SPARKREC_WORKERS (2), SPARKREC_WORKER_MEMORY (3g).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_DIR=${SPARKREC_CLUSTER_DIR:-$PWD/.cluster}
PORT=${SPARKREC_MASTER_PORT:-7077}
UI_PORT=${SPARKREC_MASTER_UI_PORT:-8080}
WORKERS=${SPARKREC_WORKERS:-2}
WORKER_MEMORY=${SPARKREC_WORKER_MEMORY:-3g}
MASTER="spark://127.0.0.1:$PORT"
SPARK_CLASS="$PWD/.venv/bin/spark-class"

alive_workers() {
  # The master's JSON view counts the workers that registered and are alive.
  curl -sf "http://127.0.0.1:$UI_PORT/json/" 2>/dev/null \
    | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin).get("aliveworkers", 0))' 2>/dev/null || echo 0
}

daemon() {  # name, class, args...: runs in its own process group so stop can take its children too
  local name=$1; shift
  setsid "$SPARK_CLASS" "$@" > "$CLUSTER_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$CLUSTER_DIR/$name.pid"
}

stop() {
  local pidfile pid
  for pidfile in "$CLUSTER_DIR"/worker-*.pid "$CLUSTER_DIR"/master.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # A worker that gets SIGTERM kills its executors first; the group kill catches what is left.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  echo "[cluster] stopped"
}

start() {
  [ -x "$SPARK_CLASS" ] || { echo "[cluster] no .venv/bin/spark-class: run make setup first" >&2; exit 1; }
  if [ "$(alive_workers)" -ge "$WORKERS" ]; then
    echo "[cluster] already running: $MASTER with $(alive_workers) workers (UI http://127.0.0.1:$UI_PORT)"
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "[cluster] port $PORT is taken by another process; set SPARKREC_MASTER_PORT" >&2; exit 1
  fi
  mkdir -p "$CLUSTER_DIR"
  daemon master org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$PORT" --webui-port "$UI_PORT"
  for i in $(seq "$WORKERS"); do
    mkdir -p "$CLUSTER_DIR/work-$i"
    daemon "worker-$i" org.apache.spark.deploy.worker.Worker "$MASTER" --host 127.0.0.1 --cores 1 \
      --memory "$WORKER_MEMORY" --work-dir "$CLUSTER_DIR/work-$i" --webui-port $((UI_PORT + i))
  done
  for _ in $(seq 120); do
    if [ "$(alive_workers)" -ge "$WORKERS" ]; then
      echo "[cluster] $MASTER: $WORKERS workers × 1 core, $WORKER_MEMORY each (UI http://127.0.0.1:$UI_PORT, logs $CLUSTER_DIR)"
      return 0
    fi
    sleep 0.5
  done
  echo "[cluster] the workers did not register within 60 s; logs:" >&2
  tail -n 20 "$CLUSTER_DIR"/*.log >&2
  stop
  exit 1
}

submit_args() {
  # The Delta jars resolved by make setup (.venv/spark-jars.txt); spark-submit needs them on the command
  # line because configure_spark_with_delta_pip does nothing once the JVM runs.
  local jars
  jars=$(tail -n +2 .venv/spark-jars.txt | paste -sd, -)
  echo "--master $MASTER --jars $jars --driver-java-options -Dlog4j2.configurationFile=file:$PWD/conf/log4j2-driver.properties"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) n=$(alive_workers); echo "[cluster] $MASTER: $n alive worker(s)"; [ "$n" -gt 0 ] ;;
  submit-args) submit_args ;;
  *) echo "usage: $0 start|stop|status|submit-args" >&2; exit 2 ;;
esac
