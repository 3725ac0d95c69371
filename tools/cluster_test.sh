#!/usr/bin/env bash
# make cluster-test: start a Spark standalone master and two one-core workers on 127.0.0.1, run the
# cluster tests against them (spark-submit of the nightly job, an executor killed mid-stage, a training
# process killed mid-run, local mode against the cluster), and stop the cluster whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
SPARKREC_CLUSTER_DIR=${SPARKREC_CLUSTER_DIR:-$(mktemp -d -t sparkrec-cluster.XXXXXX)}
export SPARKREC_CLUSTER_DIR
trap 'tools/standalone_cluster.sh stop' EXIT
tools/standalone_cluster.sh start
SPARKREC_TEST_MASTER="spark://127.0.0.1:${SPARKREC_MASTER_PORT:-7077}" \
  .venv/bin/python -m pytest tests/e2e/test_cluster.py -m "" -s "$@"
