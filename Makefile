# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint unit e2e bench chaos soak install tools clean

$(BIN)/callpulse: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $@

install: $(BIN)/callpulse

## Embedded broker + worker + simulator + live terminal wallboard (Ctrl-C stops everything).
demo: install
	$(BIN)/callpulse demo

## Lint and types (pyproject.toml names the rules): ruff on all Python files, mypy on streams/.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

## The whole test suite: lint, unit tests, then end to end on a real broker with real workers and promtool.
test: install tools lint
	$(BIN)/python -m pytest -q --durations=15  # the slowest tests, to keep CI within its budget

unit: install
	$(BIN)/python -m pytest -q --ignore=tests/e2e

e2e: install tools
	$(BIN)/python -m pytest -q tests/e2e

## Prometheus, promtool, Alertmanager and amtool (Debian packages prometheus and
## prometheus-alertmanager) run in the tests: rule unit tests, config checks, the alert end to end.
## stunnel (Debian package stunnel4) terminates TLS in front of the test broker, with certificates
## the tests make with openssl: tests/e2e/test_security.py.
TOOLS := prometheus promtool prometheus-alertmanager amtool stunnel openssl
PACKAGES := prometheus prometheus-alertmanager stunnel4 openssl
tools:
	@missing=; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "missing:$$missing; installing the Debian packages $(PACKAGES)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(PACKAGES) >/dev/null; \
	fi
	@for t in $(TOOLS); do command -v $$t >/dev/null || { echo "$$t is still missing: install the Debian packages $(PACKAGES)" >&2; exit 1; }; done
	@command -v kubectl >/dev/null || { echo "kubectl is missing: tests/test_deploy.py builds deploy/kubernetes with kubectl kustomize (no cluster needed); install kubectl" >&2; exit 1; }

## Throughput, memory and latency figures (prints them; takes several minutes).
bench: install
	$(BIN)/python bench/benchmark.py --events 1000000 --repeat 3

## The per-agent part: 1,000 agents over 200 queues through one worker, then GET /api/agents; prints
## events/s, RSS growth and the request times (bench/agents_benchmark.py; several minutes).
.PHONY: bench-agents
bench-agents: install
	$(BIN)/python bench/agents_benchmark.py --events 300000 --repeat 3

## The chaos run at length: 60 SIGKILLs and restarts over 10 minutes at 1,000 events/s through 3
## workers, scaled 3 -> 1 -> 3 midway; prints the figures (the CI size is tests/chaos/test_chaos.py).
CHAOS_ARGS ?= --kills 60 --seconds 600 --rate 1000
chaos: install
	$(BIN)/python tests/chaos/chaos.py $(CHAOS_ARGS)

## The soak: a simulated day (24 h of event time, produced as fast as it is taken) at a large
## center's rate (200 queues, 40,000 calls a day) through one worker; prints its RSS, snapshot size
## and live state records every simulated hour, then PASS/FAIL (10-30 minutes). E.g. SOAK_ARGS=--hours 2
SOAK_ARGS ?=
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var *.egg-info streams/*.egg-info
