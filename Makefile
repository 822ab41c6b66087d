# make test: set up .venv from scratch when needed, fetch the dataset, run the tests.
# make demo: the whole system on the embedded default (local Ray, bundled model, Fashion-MNIST).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.agilenn-installed
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: setup data test test-slow demo bench evaluate clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[device,cloud,train,sim,dev]'
	touch $(STAMP)

data:
	bash scripts/ensure_dataset.sh

test: $(STAMP) data
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-slow: $(STAMP) data
	$(PY) -m pytest -q -m slow

demo: $(STAMP) data
	$(VENV)/bin/agilenn demo

bench: $(STAMP)
	$(VENV)/bin/agilenn bench cloud --json

evaluate: $(STAMP) data
	$(VENV)/bin/agilenn evaluate bundles/fashion-mnist --json

clean:
	rm -rf $(VENV) .pytest_cache
