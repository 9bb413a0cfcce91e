# txmon developer entry points. Everything installs into ./.venv from the project's
# own files (requirements.lock, infra/maven/*.xml): nothing needs to be pre-installed
# beyond Python 3.11, Java 17 and Maven.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install jars demo smoke up down status airflow airflow-down test test-unit test-integration lint lock clean bench bench-quick

install: $(STAMP) jars

$(STAMP): requirements.lock setup.py pyproject.toml
	infra/ensure-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	# pyspark ships only as an sdist, and every fresh install unpacks and builds it into
	# a new ~1.4 GB revision of uv's cache; prune keeps only the current one (a CI run
	# failed with a full disk after ~70 clean-clone installs had left 73 GiB behind).
	$(BIN)/uv cache prune -q
	touch $@

jars: $(STAMP)
	$(BIN)/txmon infra fetch

# The main job on the local default (README, first command).
demo: install
	$(BIN)/txmon models list >/dev/null 2>&1 || $(BIN)/txmon train --simulate 100000
	$(BIN)/txmon demo

up: install
	$(BIN)/txmon infra up
down:
	$(BIN)/txmon infra down
status:
	$(BIN)/txmon infra status

# The project's own Airflow (UI on airflow.port, login printed); see README "Airflow".
airflow: install
	$(BIN)/txmon airflow up
airflow-down:
	$(BIN)/txmon airflow down

# The tests (README, second command): unit tests, then integration tests against
# real Kafka, Cassandra and Spark that the test session starts and stops itself.
test: install
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

test-integration: install
	$(BIN)/python -m pytest -m integration

# Lint and type check (CI runs this before the tests). mypy checks the installed names
# (txmon.models, ...): the editable install maps them with an import hook mypy cannot
# follow, so the folders that setup.py maps are linked under .lint/txmon first.
# `make lint FORMAT_CHECK=1` also checks the formatting.
FORMAT_CHECK ?= 1
lint: install
	$(BIN)/ruff check .
	$(if $(FORMAT_CHECK),$(BIN)/ruff format --check .)
	rm -rf .lint && mkdir -p .lint/txmon
	for folder in $$($(BIN)/python -c 'import ast; tree = ast.parse(open("setup.py").read()); \
	    print(*next(ast.literal_eval(n.value) for n in tree.body \
	                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "FOLDERS"))'); do \
	  ln -s ../../$$folder .lint/txmon/$$folder; done
	$(BIN)/mypy .lint/txmon dags tests

# End-to-end benchmark (its own services under .txmon-bench): full <= 15 min, quick <= 4 min.
bench: install
	$(BIN)/txmon bench
bench-quick: install
	$(BIN)/txmon bench --quick

lock:
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.lock --no-header

clean:
	rm -rf .txmon-test .txmon-bench .lint
