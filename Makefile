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

## Prometheus, promtool, Alertmanager and amtool (Debian packages prometheus and
## prometheus-alertmanager) run in the tests: rule unit tests, config checks, the alert end to end.
TOOLS := prometheus promtool prometheus-alertmanager amtool
tools:
	@missing=; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "missing:$$missing; installing the Debian packages prometheus and prometheus-alertmanager"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null; \
	fi
	@for t in $(TOOLS); do command -v $$t >/dev/null || { echo "$$t is still missing: install the Debian packages prometheus and prometheus-alertmanager" >&2; exit 1; }; done
	@command -v kubectl >/dev/null || { echo "kubectl is missing: tests/test_deploy.py builds deploy/kubernetes with kubectl kustomize (no cluster needed); install kubectl" >&2; exit 1; }

## Throughput, memory and latency figures (prints them; takes several minutes).
bench: install
	$(BIN)/python bench/benchmark.py --events 1000000 --repeat 3

clean:
	rm -rf $(VENV) var *.egg-info streams/*.egg-info
