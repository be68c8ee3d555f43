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

.PHONY: demo test lint bench bench-venv bench-estimators venv clean proto

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

bench: $(STAMP) bench-estimators
	$(VENV)/bin/python benchmarks/run.py --with-fidelity --with-midsize

# Estimator accuracy vs shapiq and pyDVL (benchmarks/estimators.py) in its own venv: shapiq >= 1.5 needs
# Python >= 3.12, and pyDVL 0.10 is installed with --no-deps (it pins numpy<2 but runs on numpy 2).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
# A pyenv 3.12 when there is one (its shim may not be active), else python3.12 on PATH.
BENCH_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3) python3.12)

bench-venv: $(BENCH_STAMP)

$(BENCH_STAMP): benchmarks/requirements-peers.txt
	test -x $(BENCH_VENV)/bin/python || $(BENCH_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -r benchmarks/requirements-peers.txt
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps 'pydvl==0.10.*'
	touch $(BENCH_STAMP)

bench-estimators: $(BENCH_STAMP)
	PYTHONPATH=. $(BENCH_VENV)/bin/python -W ignore benchmarks/estimators.py

# Regenerate the committed gRPC code from common/wire/publication.proto (needs the dev extra).
proto: $(STAMP)
	$(VENV)/bin/python -m common.wire.gen_proto

clean:
	rm -rf $(VENV) build *.egg-info
