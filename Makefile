# The README's commands. `make demo` and `make test` each build the environment first (make setup),
# which is quick once it exists.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SPARKREC := $(VENV)/bin/sparkrec
JAVA_HOME := $(shell tools/java_home.sh)
export JAVA_HOME
# Sample: the UCI Online Retail log, December 2010 (data/online-retail/README.md).
SAMPLE := data/online-retail/online_retail_2010-12.csv.gz
SAMPLE_FROM := 2010-12-01
SAMPLE_TO := 2010-12-23
PYTEST_ARGS ?=

.PHONY: setup demo test test-all test-sql lint cluster-test wheel bench clean-lakehouse metastore metastore-stop \
	sql-server sql-server-stop

setup:
	@tools/setup_env.sh

demo: setup
	$(SPARKREC) import online-retail --input $(SAMPLE) --output landing
	$(SPARKREC) backfill --from $(SAMPLE_FROM) --to $(SAMPLE_TO)
	$(SPARKREC) summary --date $(SAMPLE_TO)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (format check + lint) and mypy over the code, and the package's shape (module and function
# sizes, no import cycles). mypy's cache sits beside the shared environment, so clones reuse it.
LINTED := sparkrec tests bench jobs tools
lint: setup
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)
	MYPY_CACHE_DIR=$${SPARKREC_ENV_CACHE:-$$HOME/.cache/sparkrec}/mypy $(VENV)/bin/mypy
	$(PY) tools/check_structure.py sparkrec

# Everything, the slow tests too (GPU tests skip without a GPU).
test-all: setup
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

# The SQL endpoint's and the catalog's tests, the PostgreSQL metastore's too (installed if missing).
test-sql: setup
	$(PY) -m pytest -m "not gpu and not cluster" tests/e2e/test_sql_server.py tests/spark/test_catalog_names.py $(PYTEST_ARGS)

# A persistent catalog: the Hive metastore in PostgreSQL on 127.0.0.1:5433 (data under ./metastore);
# then run sparkrec with --conf conf/metastore-local.yaml.
metastore: setup
	tools/metastore.sh start

metastore-stop:
	tools/metastore.sh stop

# The tables over JDBC/ODBC (jdbc:hive2://127.0.0.1:10000: beeline, BI tools) and Spark Connect
# (sc://127.0.0.1:15002), in the background until `make sql-server-stop`.
# SQL_SERVER_ARGS="--conf conf/metastore-local.yaml" serves the persistent catalog.
SQL_SERVER_ARGS ?=
sql-server: setup
	$(SPARKREC) sql-server start $(SQL_SERVER_ARGS)

sql-server-stop:
	$(SPARKREC) sql-server stop $(SQL_SERVER_ARGS)

# A Spark standalone master and two workers on 127.0.0.1, the jobs sent to them with spark-submit,
# executor and training-process kills; the cluster is stopped whatever happens.
cluster-test: setup
	tools/cluster_test.sh $(PYTEST_ARGS)

# The project as a wheel under dist/ (cluster libraries, pip), and the same archive as a .zip for
# spark-submit --py-files (Spark puts .zip and .egg files on the executors' Python path, not .whl).
wheel: setup
	rm -f dist/sparkrec-*
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .
	cd dist && for w in sparkrec-*.whl; do cp "$$w" "$${w%%-py3-none-any.whl}.zip"; done
	@ls dist/sparkrec-*

# Benchmarks: results as JSON under bench/results/.
bench: setup
	$(PY) bench/clean.py
	$(PY) bench/embed.py
	$(PY) bench/topk.py
	$(PY) bench/train.py
	$(PY) bench/cluster.py
	$(PY) bench/scale.py

clean-lakehouse:
	rm -rf lakehouse landing mlflow.db mlartifacts
