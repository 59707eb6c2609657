# nasctl — `make quickstart` and `make test` set everything up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
NB201   ?= $(or $(NASCTL_NB201),$(wildcard ../shared/benchmarks/nb201/nats_tss_test_acc_200ep.csv))

.PHONY: help install data quickstart study test lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) data  ## create .venv, install nasctl and its dependencies, get Fashion-MNIST

data:  ## install Fashion-MNIST (Debian package dataset-fashion-mnist) when apt is available
	@if [ -f $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist', or download the four IDX .gz files and pass dataset.root=<dir>"; \
	fi

quickstart: install  ## a real search on Fashion-MNIST on CPU, then derive
	$(BIN)/nasctl search experiment=quickstart
	$(BIN)/nasctl derive run=latest

study: install  ## the NB201 stability study (21 searches, ~30 min on 2 cores) and its report (docs/results.md)
	OMP_NUM_THREADS=1 $(if $(NB201),NASCTL_NB201=$(abspath $(NB201))) $(BIN)/nasctl search experiment=nb201_stability hydra/launcher=joblib hydra.launcher.n_jobs=2
	$(BIN)/nasctl report

test: install  ## the test suite (CPU; GPU tests skip without CUDA)
	HYDRA_FULL_ERROR=1 $(BIN)/python -m pytest -q

bench: install  ## steps/s and img/s of each trainer speed switch vs eager fp32 -> bench.json (bench=gpu: make bench ARGS=bench=gpu)
	$(BIN)/nasctl bench $(ARGS)

lint: install  ## ruff
	$(BIN)/ruff check nasctl tests

clean:  ## remove runs and caches (keeps .venv)
	rm -rf runs outputs multirun .pytest_cache
