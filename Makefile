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

.PHONY: setup demo test test-all bench clean-lakehouse

setup:
	@tools/setup_env.sh

demo: setup
	$(SPARKREC) import online-retail --input $(SAMPLE) --output landing
	$(SPARKREC) backfill --from $(SAMPLE_FROM) --to $(SAMPLE_TO)
	$(SPARKREC) summary --date $(SAMPLE_TO)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything, the slow tests too (GPU tests skip without a GPU).
test-all: setup
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

# Benchmarks: results as JSON under bench/results/.
bench: setup
	$(PY) bench/clean.py
	$(PY) bench/embed.py
	$(PY) bench/topk.py
	$(PY) bench/train.py

clean-lakehouse:
	rm -rf lakehouse landing mlflow.db mlartifacts
