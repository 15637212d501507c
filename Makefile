# The front door: every command a newcomer needs. `make run` brings the stack up; `make test` checks it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
MODEL_STORE ?= model_store
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install archive serve run test test-unit test-integration lint format bench soak chromium clean docker-build up down docker-test

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[model,examples,dev]'
	touch $(STAMP)

archive: install
	$(PY) -m archive build --store $(MODEL_STORE)

serve: install
	$(PY) -m launcher serve

run: install archive serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install lint chromium
	$(BIN)/pytest

# Debian's chromium renders /docs in the docs test (tests/integration/service/test_docs_in_browser.py);
# without it that test fails saying why.
chromium:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium could not be installed: the docs page test will fail"

test-unit: install
	$(BIN)/pytest tests/unit

test-integration: install
	$(BIN)/pytest tests/integration

# wrk is the load generator (bench/post.lua); without it the bench falls back to its own asyncio one.
bench: install
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
		|| echo "wrk could not be installed: using the asyncio load generator"
	$(PY) -m bench

# The stack under steady load (80% of what `make bench` measured), then bench/results/soak.md,
# soak.png, soak.json. SOAK_MINUTES=N to change its length (default 10).
soak: install
	$(PY) -m bench.soak

clean:
	rm -rf run .pytest_cache .mypy_cache .ruff_cache bench/results
	find . -name __pycache__ -prune -exec rm -rf {} +

# Containers (docker/): TorchServe on an internal network behind the gateway, whose port is
# the only one published. GPU: COMPOSE_FILES="docker/compose.yaml docker/compose.gpu.yaml".
COMPOSE_FILES ?= docker/compose.yaml
COMPOSE := docker compose $(addprefix -f ,$(COMPOSE_FILES))

docker-build:
	$(COMPOSE) build

up:
	@test -f docker/.env || { echo "docker/.env is missing: cp docker/.env.example docker/.env, then set the keys" >&2; exit 1; }
	$(COMPOSE) up -d --wait

down:
	$(COMPOSE) down

# The deployment on a real Docker engine (tests/deployment): installs the engine and compose v2,
# starts a private dockerd, builds with docker-build's command, runs up, checks the stack through
# its published port, runs down, then stops the engine and puts the host's network back. Root.
docker-test: install
	$(PY) -m tests.deployment.compose_check
