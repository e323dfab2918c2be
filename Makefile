# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test unit e2e bench install tools clean

$(BIN)/callpulse: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $@

install: $(BIN)/callpulse

## Embedded broker + worker + simulator + live terminal wallboard (Ctrl-C stops everything).
demo: install
	$(BIN)/callpulse demo

## The whole test suite: unit tests, then end to end on a real broker with real workers and promtool.
test: install tools
	$(BIN)/python -m pytest -q

unit: install
	$(BIN)/python -m pytest -q --ignore=tests/e2e

e2e: install tools
	$(BIN)/python -m pytest -q tests/e2e

## promtool (Debian package prometheus) checks the /metrics page in the tests.
tools:
	@command -v promtool >/dev/null || { \
	  echo "promtool not found: installing the Debian package prometheus"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq prometheus >/dev/null; }
	@command -v promtool >/dev/null || { echo "promtool is still missing: install the Debian package prometheus" >&2; exit 1; }

## Throughput, memory and latency figures (prints them; takes several minutes).
bench: install
	$(BIN)/python bench/benchmark.py --events 1000000 --repeat 3

clean:
	rm -rf $(VENV) var *.egg-info streams/*.egg-info
