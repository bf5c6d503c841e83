# make setup: install only what is missing (system packages, .venv, the package)
# make run:   setup, then run the collector on this host (JSON lines on stdout)
# make test:  setup + test needs, then the whole suite
# make bench: the benchmarks (print their figures)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check

.PHONY: setup system run test test-deps unit bench clean docs

# The per-message modules are compiled with Cython (setup.py); an edit to
# one of them recompiles just that one (build_ext is incremental).
CORE   := $(wildcard akto_collector/*.py akto_collector/*.pxd akto_collector/*/*.py akto_collector/*/*.pxd) setup.py

setup: system $(VENV)/.compiled

system:
	@bash scripts/setup-system.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PIP) install "Cython>=3.0,<3.2" "setuptools>=61" wheel
	@$(PIP) install --no-build-isolation -e .
	@touch $@

$(VENV)/.compiled: $(VENV)/.installed $(CORE)
	@$(PY) setup.py -q build_ext --inplace 2>&1 | grep -v -e '^running' -e 'UserWarning' -e 'warnings.warn' || true
	@$(PY) -c 'from akto_collector.compiled import summary; print("core:", summary())'
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
	AKTO_PURE_PYTHON=1 $(PY) -m pytest tests/unit -q

unit: setup test-deps
	$(PY) -m pytest tests/unit -q
	AKTO_PURE_PYTHON=1 $(PY) -m pytest tests/unit -q

bench: setup test-deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

docs: setup
	$(PY) -m akto_collector.config --update docs/configuration.md
	$(PY) -m akto_collector.config --update README.md
	$(PY) packaging/env_file.py > packaging/akto-collector.env
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find akto_collector -name '*.so' -delete -o -name '*.c' -delete

# make install: the collector as a systemd service on this host
# (docs/deployment.md): the package into its own venv under PREFIX, the unit,
# and the environment file, which is never overwritten. DESTDIR puts it all
# under another root (for packaging, or a test); PREFIX and CONFDIR are the
# paths the installed unit names. A venv cannot move: with DESTDIR its scripts
# name the DESTDIR path, so stage only install-files that way.
PREFIX  ?= /opt/akto-collector
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/akto-collector
DESTDIR ?=

.PHONY: install install-venv install-files env-file

install: system install-venv install-files
	@echo "installed: systemctl daemon-reload && systemctl enable --now akto-collector"

# Not editable, with build isolation: pyproject.toml's build requirements
# compile the core, as in the image.
install-venv:
	@test -x $(DESTDIR)$(PREFIX)/.venv/bin/python || /usr/bin/python3 -m venv --system-site-packages $(DESTDIR)$(PREFIX)/.venv
	@$(DESTDIR)$(PREFIX)/.venv/bin/pip install -q --disable-pip-version-check .
	@$(DESTDIR)$(PREFIX)/.venv/bin/python -I -c 'from akto_collector.compiled import summary; print("core:", summary())'

install-files:
	@install -d $(DESTDIR)$(UNITDIR)
	@sed -e 's|/opt/akto-collector/|$(PREFIX)/|g' -e 's|/etc/akto-collector/|$(CONFDIR)/|g' \
		packaging/akto-collector.service > $(DESTDIR)$(UNITDIR)/akto-collector.service
	@chmod 0644 $(DESTDIR)$(UNITDIR)/akto-collector.service
	@if [ -e $(DESTDIR)$(CONFDIR)/env ]; then echo "kept $(DESTDIR)$(CONFDIR)/env"; \
	else install -D -m 0600 packaging/akto-collector.env $(DESTDIR)$(CONFDIR)/env; fi

# After a change to the table of variables (akto_collector/config.py).
env-file: $(VENV)/.installed
	$(PY) packaging/env_file.py > packaging/akto-collector.env
