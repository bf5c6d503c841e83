# make setup: install only what is missing (system packages, .venv, the package)
# make run:   setup, then run the collector on this host (JSON lines on stdout)
# make test:  setup + test needs, then the whole suite
# make bench: the benchmarks (print their figures)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check

.PHONY: setup system run test test-deps unit bench clean

setup: system $(VENV)/.installed

system:
	@bash scripts/setup-system.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PIP) install -e .
	@touch $@

test-deps: $(VENV)/.test-installed

$(VENV)/.test-installed: requirements-test.txt $(VENV)/.installed
	@bash scripts/setup-system.sh --test
	@$(PIP) install -r requirements-test.txt
	@touch $@

run: setup
	@$(VENV)/bin/akto-collector run $(ARGS)

test: setup test-deps
	$(PY) -m pytest tests -q

unit: setup test-deps
	$(PY) -m pytest tests/unit -q

bench: setup test-deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
