# roomgate: the two commands a newcomer needs are `make run` and `make test`.
# Both install whatever is missing first (Debian packages via apt-get, Python
# packages via pip into .venv from setup.cfg's extras).

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
CONFIG      ?= config/gateway.yaml
# Debian packages the tests and `make run` need: tshark judges wire formats,
# chromium is the real browser peer, sox/espeak-ng make and measure audio, openssl makes
# the development TLS certificate.
APT_PACKAGES := tshark chromium sox espeak-ng openssl baresip-core
PYTEST_ARGS ?=
# Only `make bench` installs these: rtpengine is the C reference of the media benchmark.
BENCH_APT_PACKAGES := rtpengine-daemon
BENCH_ARGS ?=
# `make bench` runs these benchmarks (any of: media calls setup video), each with its own arguments.
BENCH_WHICH ?= media calls setup video
BENCH_CALLS_ARGS ?=
BENCH_SETUP_ARGS ?=
BENCH_VIDEO_ARGS ?=

# $(call apt_install,PACKAGES): apt-get install whichever of PACKAGES is missing (root or sudo).
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

.PHONY: install dev-cert system-packages python-packages bench-packages run test lint bench clean

install: system-packages python-packages dev-cert

dev-cert: system-packages

# A self-signed certificate for the SIP TLS listener of config/gateway.yaml (sip.tls_cert and
# sip.tls_key point here), made once with openssl into the git-ignored run/tls/. Development
# only: configure a real certificate for anything callers outside this machine reach.
DEV_TLS := run/tls
dev-cert: $(DEV_TLS)/sip-dev-cert.pem

$(DEV_TLS)/sip-dev-cert.pem:
	mkdir -p $(DEV_TLS)
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=roomgate development" \
	  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
	  -keyout $(DEV_TLS)/sip-dev-key.pem -out $(DEV_TLS)/sip-dev-cert.pem
	chmod 600 $(DEV_TLS)/sip-dev-key.pem

system-packages:
	$(call apt_install,$(APT_PACKAGES))

python-packages: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

run: install
	$(BIN)/roomgate run --config $(CONFIG)

# The whole suite: the `slow` tests (a 200 s session-timer call that mostly waits) run in a second
# pytest process beside the rest, which stays one test at a time (timing-sensitive media tests must
# not share the two cores with each other); the slow run's report follows the main one. With
# PYTEST_ARGS (a subset, -x, -k ...) it is one plain pytest run.
ifeq ($(strip $(PYTEST_ARGS)),)
test: install
	@mkdir -p run
	@$(BIN)/python -m pytest -q -ra -p no:cacheprovider -m slow > run/test-slow.log 2>&1 & slow=$$!; \
	$(BIN)/python -m pytest -q -ra --durations=25 -m "not slow"; main=$$?; \
	wait $$slow; slow_rc=$$?; echo "---- slow tests (pytest -m slow, run alongside) ----"; cat run/test-slow.log; \
	echo "main run: exit $$main; slow run: exit $$slow_rc"; [ $$main -eq 0 ] && [ $$slow_rc -eq 0 ]
else
test: install
	$(BIN)/python -m pytest -q -ra --durations=25 $(PYTEST_ARGS)
endif

lint: python-packages
	$(BIN)/ruff check gateway sip h323 bridge tests bench
	$(BIN)/mypy gateway sip h323 bridge

# rtpengine-daemon's postinst tries to start the service; policy-rc.d or a missing init refuses,
# which is fine: the benchmark runs its own rtpengine in the foreground on 127.0.0.1.
bench-packages: python-packages
	$(call apt_install,$(BENCH_APT_PACKAGES))
	$(BIN)/python -c "import uvloop, matplotlib" 2>/dev/null || $(BIN)/pip install -q -e '.[test,dev,bench]'

# BENCH_ARGS (media) e.g. "--quick", "--repeat 1 --systems rtpengine,py-uvloop";
# BENCH_CALLS_ARGS e.g. "--repeat 1 --hold 20 --max-calls 40"; BENCH_SETUP_ARGS e.g. "--max-rate 8";
# BENCH_VIDEO_ARGS e.g. "--repeat 1 --hold 20 --start-calls 2 --max-calls 16";
# BENCH_WHICH="calls" runs only that one (both of its cases: (a) G.711 passthrough, (b) transcoding).
bench: install bench-packages
	mkdir -p run
	$(if $(filter media,$(BENCH_WHICH)),$(BIN)/python -m bench media --json run/bench-media.json --chart run/bench-media.png $(BENCH_ARGS))
	$(if $(filter calls,$(BENCH_WHICH)),$(BIN)/python -m bench calls --passthrough --json run/bench-calls-passthrough.json --chart run/bench-calls-passthrough.png $(BENCH_CALLS_ARGS))
	$(if $(filter calls,$(BENCH_WHICH)),$(BIN)/python -m bench calls --json run/bench-calls-transcode.json --chart run/bench-calls-transcode.png $(BENCH_CALLS_ARGS))
	$(if $(filter setup,$(BENCH_WHICH)),$(BIN)/python -m bench setup --json run/bench-setup.json --chart run/bench-setup.png $(BENCH_SETUP_ARGS))
	$(if $(filter video,$(BENCH_WHICH)),$(BIN)/python -m bench video --json run/bench-video.json --chart run/bench-video.png $(BENCH_VIDEO_ARGS))

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
