#!/usr/bin/env bash
# GPU discovery script for Spark's resource scheduling: prints the GPUs of this node as
#   {"name": "gpu", "addresses": ["0", "1"]}
# Every worker needs it at the same path; point spark.executor.resource.gpu.discoveryScript (and, for a
# driver that trains in local mode, spark.driver.resource.gpu.discoveryScript) at it.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, - | sed 's/,/","/g')
echo "{\"name\": \"gpu\", \"addresses\": [\"${addresses}\"]}"
