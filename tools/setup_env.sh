#!/usr/bin/env bash
# Builds the project's environment; safe to run again, and fast when nothing changed.
#
# The heavy dependencies (pyspark, torch with its CUDA libraries, transformers, mlflow) go into one
# environment outside the clone, keyed by the hash of requirements.lock, so fresh clones, CI runs
# and several checkouts share it and pip's cache fills it only once. `.venv` in the clone is a small
# virtual environment that sees that shared one through a .pth file and holds the project itself
# (editable), so `.venv/bin/python`, `.venv/bin/sparkrec` and `.venv/bin/spark-submit` all work.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
ENV_CACHE=${SPARKREC_ENV_CACHE:-$HOME/.cache/sparkrec}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { echo "sparkrec needs Python >= 3.10; $PYTHON is $("$PYTHON" --version 2>&1)" >&2; exit 1; }
pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
lock_hash=$( (cat requirements.lock; echo "$pyver") | sha256sum | cut -c1-12)
deps="$ENV_CACHE/deps-py$pyver-$lock_hash"

# Java 17 (Spark 4.2 runs on 17 or 21).
java_home=$(tools/java_home.sh) || {
  echo "sparkrec needs Java 17 or 21 (Debian: apt-get install -y openjdk-17-jdk-headless)" >&2; exit 1; }

mkdir -p "$ENV_CACHE"
exec 9>"$ENV_CACHE/.lock"
flock 9  # two setups at once (a test run and a demo) wait for each other
if [ ! -f "$deps/.complete" ]; then
  echo "[setup] building the shared environment $deps (first time only; pip's cache is reused)"
  rm -rf "$deps"
  "$PYTHON" -m venv "$deps"
  "$deps/bin/python" -m pip install --quiet --upgrade "pip>=24"
  "$deps/bin/python" -m pip install --progress-bar off -r requirements.lock
  touch "$deps/.complete"
else
  echo "[setup] reusing $deps"
fi

site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
if [ ! -x .venv/bin/python ] || ! grep -qx "$(site_of "$deps/bin/python")" .venv/.deps 2>/dev/null; then
  echo "[setup] creating .venv"
  rm -rf .venv
  "$PYTHON" -m venv --without-pip .venv
  site_of "$deps/bin/python" > .venv/.deps
  echo "$(site_of "$deps/bin/python")" > "$(site_of .venv/bin/python)/_sparkrec_deps.pth"
  ln -s "$deps/bin/mlflow" .venv/bin/mlflow   # the MLflow UI needs nothing of the project
fi
if [ ! -f .venv/.project ] || [ pyproject.toml -nt .venv/.project ]; then
  "$deps/bin/python" -m pip --python .venv/bin/python install --quiet --no-deps --no-build-isolation -e .
  touch .venv/.project
fi
if [ ! -f .venv/.test-tools ] || [ requirements-test.lock -nt .venv/.test-tools ]; then
  "$deps/bin/python" -m pip --python .venv/bin/python install --quiet --no-deps -r requirements-test.lock
  touch .venv/.test-tools
fi
# pytest runs from .venv so that it imports the project.
printf '#!/bin/sh\nexec "%s" -m pytest "$@"\n' "$PWD/.venv/bin/python" > .venv/bin/pytest
chmod +x .venv/bin/pytest
# Spark's launchers from the pip package, with SPARK_HOME, Java and this venv's Python set.
spark_home=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
for tool in spark-submit spark-class spark-sql pyspark beeline; do
  cat > ".venv/bin/$tool" <<WRAPPER
#!/bin/sh
export SPARK_HOME="$spark_home"
export JAVA_HOME="\${JAVA_HOME:-$java_home}"
export PYSPARK_PYTHON="\${PYSPARK_PYTHON:-$PWD/.venv/bin/python}"
export PYSPARK_DRIVER_PYTHON="\${PYSPARK_DRIVER_PYTHON:-$PWD/.venv/bin/python}"
exec "\$SPARK_HOME/bin/$tool" "\$@"
WRAPPER
  chmod +x ".venv/bin/$tool"
done
echo "JAVA_HOME=$java_home" > .venv/java.env

# Delta's jars: resolved by Ivy from Maven Central once, then read from ~/.ivy2.5.2.
if [ ! -f .venv/.jars ]; then
  echo "[setup] resolving Delta Lake jars"
  if ! JAVA_HOME=$java_home .venv/bin/sparkrec doctor --quiet; then
    echo "[setup] Ivy could not resolve the jars; filling ~/.m2 with Maven and trying again"
    artifact=$(.venv/bin/python -c 'from sparkrec.session import delta_maven_artifact; from sparkrec.config import load_config; print(delta_maven_artifact(load_config().spark.delta_jar_version))')
    mvn -q dependency:get -Dartifact="$artifact"
    JAVA_HOME=$java_home .venv/bin/sparkrec doctor --quiet
  fi
  touch .venv/.jars
fi
echo "[setup] ready: .venv (Python $pyver, Java at $java_home)"
