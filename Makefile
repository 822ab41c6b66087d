# make test: set up .venv from scratch when needed, fetch the dataset, lint and type-check, run the tests.
# make test-device: the same tests in .venv-device, a device install (exactly deploy/device-packages.txt).
# make test-cluster: a two-node Ray cluster in network namespaces on this machine (root), a node killed.
# make test-firmware: the device front as integer C, bit-exact on the host and on QEMU's Cortex-M7.
# make test-images: deploy/'s images built without a registry and run (root: podman, debootstrap).
# make demo: the whole system on the embedded default (local Ray, bundled model, Fashion-MNIST).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.agilenn-installed
# The device extra and the test tools only: tests that need the train, cloud or sim extra skip there.
DEVICE_VENV  ?= .venv-device
DEVICE_STAMP := $(DEVICE_VENV)/.agilenn-installed
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: setup data firmware-tools image-tools test test-images test-device test-slow test-cluster test-firmware demo bench evaluate clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[device,cloud,train,sim,data,dev,firmware]'
	touch $(STAMP)

data:
	bash scripts/ensure_dataset.sh

# The Cortex-M7 cross compiler, newlib and QEMU (Debian packages); installed when missing and root.
firmware-tools:
	bash scripts/ensure_firmware_tools.sh

image-tools:
	bash scripts/ensure_image_tools.sh

# Lint, types and layers first (settings in pyproject.toml), then the tests.
test: $(STAMP) data
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# A fresh venv with the device extra alone, its package list recorded, then the test tools added.
$(DEVICE_STAMP): pyproject.toml deploy/device-packages.txt
	rm -rf $(DEVICE_VENV)
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEVICE_VENV)/bin/python -m pip install -q -e '.[device]'
	$(DEVICE_VENV)/bin/python scripts/installed_distributions.py > $(DEVICE_VENV)/device-install.txt
	$(DEVICE_VENV)/bin/python -m pip install -q -e '.[device,dev]'
	touch $(DEVICE_STAMP)

# Fails when the device install holds anything beyond deploy/device-packages.txt (torch, Ray, Pillow...),
# then runs the suite there (tests that need another extra skip).
test-device: $(DEVICE_STAMP) data
	grep -v '^#' deploy/device-packages.txt | diff -u - $(DEVICE_VENV)/device-install.txt \
	  || { echo "test-device: the device install differs from deploy/device-packages.txt"; exit 1; }
	$(DEVICE_VENV)/bin/python -m pytest -q

test-slow: $(STAMP) data
	$(PY) -m pytest -q -m slow

# Skips (and passes) when not root or without `ip`; -s shows the failover report (JSON).
test-cluster: $(STAMP)
	$(PY) -m pytest -q -s -m multinode tests/test_multinode_cluster.py

# The firmware tests: generation, host builds over whole test splits, Cortex-M7 builds under QEMU.
test-firmware: $(STAMP) data firmware-tools
	$(PY) -m pytest -q -m firmware

# The three images built from deploy/ on local stand-in bases, the cloud serving TLS, tokens and mutual
# TLS on an internal container network, the device streaming 500 inputs to both workers.
test-images: $(STAMP) data
	@if [ "$$(id -u)" -ne 0 ]; then echo "test-images: skipped: needs root (rootful podman, debootstrap)"; \
	else bash scripts/ensure_image_tools.sh && $(PY) scripts/images.py --inputs 500; fi

demo: $(STAMP) data
	$(VENV)/bin/agilenn demo

bench: $(STAMP)
	$(VENV)/bin/agilenn bench cloud --json

evaluate: $(STAMP) data
	$(VENV)/bin/agilenn evaluate bundles/fashion-mnist --json

clean:
	rm -rf $(VENV) $(DEVICE_VENV) .pytest_cache
