# Glimpse: two commands set everything up on a fresh machine.
#   make demo   install into .venv, build the demo bundle on first run, serve http://127.0.0.1:8080
#   make test   install what the tests need (.venv and .venv-host), run them
# Other targets: make models (rebuild the committed default model; needs PyTorch), make bench.

PYTHON      ?= python3
VENV        := .venv
HOST_VENV   := .venv-host
DEMO_BUNDLE := var/demo-bundle
HOST        ?= 127.0.0.1
PORT        ?= 8080
PYTEST_ARGS ?=

.PHONY: demo test test-device test-host models bench system-deps clean

# Debian packages the tests use as users have them: headless Chromium and its
# driver for the browser test, systemd-analyze for the unit file, sshd (with the
# ssh client) and rsync for the push tests' loopback "device".
SYSTEM_DEPS := /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver /usr/bin/systemd-analyze:systemd \
               /usr/sbin/sshd:openssh-server /usr/bin/rsync:rsync
system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do [ -x "$${dep%%:*}" ] || missing="$$missing $${dep##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

# The device side: what a Pi installs (LiteRT pinned to the version proven on its CPU). No PyTorch.
$(VENV)/.installed-demo: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[device,demo]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-demo
	$(VENV)/bin/pip install --quiet -e '.[device,demo,test]'
	touch $@

# The host side: PyTorch (CPU wheel, pinned) and litert-torch, which needs a newer
# LiteRT than the device pin, hence its own environment.
$(HOST_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(HOST_VENV)
	$(HOST_VENV)/bin/pip install --quiet -e '.[host,test]'
	touch $@

demo: $(VENV)/.installed-demo
	@$(VENV)/bin/glimpse verify --bundle $(DEMO_BUNDLE) >/dev/null 2>&1 || \
	  { echo "Building the demo bundle from scikit-image's photographs (first run only)..."; \
	    $(VENV)/bin/glimpse-provision demo --out $(DEMO_BUNDLE) --force; }
	@echo "Open http://$(HOST):$(PORT)/ in a browser (Ctrl-C stops)."
	$(VENV)/bin/glimpse serve --bundle $(DEMO_BUNDLE) --host $(HOST) --port $(PORT)

test: test-device test-host

test-device: $(VENV)/.installed-test system-deps
	$(VENV)/bin/python -m pytest -m "not host" $(PYTEST_ARGS)

test-host: $(HOST_VENV)/.installed
	$(HOST_VENV)/bin/python -m pytest -m host $(PYTEST_ARGS)

models: $(HOST_VENV)/.installed
	$(HOST_VENV)/bin/glimpse-provision model default --out models/glimpse-default

bench: $(VENV)/.installed-test
	@$(VENV)/bin/glimpse verify --bundle $(DEMO_BUNDLE) >/dev/null 2>&1 || \
	  $(VENV)/bin/glimpse-provision demo --out $(DEMO_BUNDLE) --force --quiet
	$(VENV)/bin/python -m bench.query_latency --bundle $(DEMO_BUNDLE)

clean:
	rm -rf $(VENV) $(HOST_VENV) var build *.egg-info
