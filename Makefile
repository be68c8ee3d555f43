# FairPool: `make demo`, `make test`, `make bench`. Each bootstraps .venv from constraints.txt.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_DISABLE_UPDATE_CHECK := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint bench venv clean proto

venv: $(STAMP)

# Rebuilt when missing or when the dependency declarations change (stale).
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fairpool demo

# Two workers on two cores (at most four elsewhere); worksteal evens out the long Flower runs.
test: $(STAMP) lint
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal

# ruff (pyflakes, pycodestyle, isort) and mypy (strict on common/valuation); config in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run.py --with-fidelity --with-midsize

# Regenerate the committed gRPC code from common/wire/publication.proto (needs the dev extra).
proto: $(STAMP)
	$(VENV)/bin/python -m common.wire.gen_proto

clean:
	rm -rf $(VENV) build *.egg-info
