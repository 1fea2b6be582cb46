# roomgate: the two commands a newcomer needs are `make run` and `make test`.
# Both install whatever is missing first (Debian packages via apt-get, Python
# packages via pip into .venv from setup.cfg's extras).

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
CONFIG      ?= config/gateway.yaml
# Debian packages the tests and `make run` need: tshark judges wire formats,
# chromium is the real browser peer, sox/espeak-ng make and measure audio.
APT_PACKAGES := tshark chromium sox espeak-ng
PYTEST_ARGS ?=

.PHONY: install system-packages python-packages run test lint bench clean

install: system-packages python-packages

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

python-packages: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

run: install
	$(BIN)/roomgate run --config $(CONFIG)

test: install
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: python-packages
	$(BIN)/ruff check gateway sip h323 bridge tests bench

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
