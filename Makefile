# Glimpse: two commands set everything up on a fresh machine.
#   make demo   install into .venv, build the demo bundle on first run, serve http://127.0.0.1:8080
#   make test   install what the tests need (.venv and .venv-host), run them
# Other targets: make models (rebuild the committed default model; needs PyTorch), make bench,
# make bench-ann (ANN engines side by side; needs Debian's dataset-fashion-mnist, x86 for scann).

PYTHON      ?= python3
VENV        := .venv
HOST_VENV   := .venv-host
BENCH_VENV  := .venv-bench
ANN_ITEMS   ?= 100000
ANN_QUERIES ?= 500
DEMO_BUNDLE := var/demo-bundle
HOST        ?= 127.0.0.1
PORT        ?= 8080
PYTEST_ARGS ?=

.PHONY: demo test test-device test-host models bench bench-ann clean

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

test-device: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -m "not host" $(PYTEST_ARGS)

test-host: $(HOST_VENV)/.installed
	$(HOST_VENV)/bin/python -m pytest -m host $(PYTEST_ARGS)

models: $(HOST_VENV)/.installed
	$(HOST_VENV)/bin/glimpse-provision model default --out models/glimpse-default

bench: $(VENV)/.installed-test
	@$(VENV)/bin/glimpse verify --bundle $(DEMO_BUNDLE) >/dev/null 2>&1 || \
	  $(VENV)/bin/glimpse-provision demo --out $(DEMO_BUNDLE) --force --quiet
	$(VENV)/bin/python -m bench.query_latency --bundle $(DEMO_BUNDLE)

# The device's packages plus the reference engines (scann, hnswlib): a bench-only environment.
$(BENCH_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -e '.[device,bench]'
	touch $@

bench-ann: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench.ann --items $(ANN_ITEMS) --queries $(ANN_QUERIES)

clean:
	rm -rf $(VENV) $(HOST_VENV) $(BENCH_VENV) var build *.egg-info
