# nasctl — `make quickstart` and `make test` set everything up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
NB201   ?= $(or $(NASCTL_NB201),$(wildcard ../shared/benchmarks/nb201/nats_tss_test_acc_200ep.csv))

.PHONY: help install data quickstart study test test-fast lint bench gpu-wheels gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -c 'from nasctl.spaces.kernels import extension as e; print("CPU depthwise kernel:", "built" if e() else "not built, torch convs run instead")'
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

study: install  ## the NB201 stability study (21 searches of 30 epochs, 78 min measured on 2 partly shared cores) and its report (docs/results.md)
	OMP_NUM_THREADS=1 $(if $(NB201),NASCTL_NB201=$(abspath $(NB201))) $(BIN)/nasctl search experiment=nb201_stability hydra/launcher=joblib hydra.launcher.n_jobs=2
	$(BIN)/nasctl report

test: install  ## the whole test suite, as CI runs it (CPU; GPU tests skip without CUDA)
	HYDRA_FULL_ERROR=1 $(BIN)/python -m pytest -q

test-fast: install  ## the development tier: everything not marked slow (no training CLI runs, no searches)
	HYDRA_FULL_ERROR=1 $(BIN)/python -m pytest -q -m "not slow"

bench: install  ## steps/s and img/s of each trainer speed switch vs eager fp32 -> bench.json (bench=gpu: make bench ARGS=bench=gpu)
	$(BIN)/nasctl bench $(ARGS)

# What a typical offline GPU image lacks (it has torch, torchvision, typer, rich, numpy, scipy, matplotlib,
# tensorboard, pyyaml, joblib, cloudpickle, pytest): nasctl's Hydra stack, as wheels for its Python.
WHEELS     := .gpu-wheels
PIP        ?= $(if $(wildcard $(BIN)/pip),$(BIN)/pip,$(PY) -m pip)
GPU_PYTHON ?= $(or $(wildcard $(BIN)/python),python3)   # a GPU image's python3 holds its torch
GPU_PKGS   := hydra-core omegaconf hydra-joblib-launcher hydra-submitit-launcher submitit
GPU_TARGET := --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --only-binary=:all:

gpu-wheels:  ## download the wheels `make gpu-check` installs offline (Python 3.12, manylinux x86-64) into .gpu-wheels/
	$(PIP) download -q --no-deps $(GPU_TARGET) -c constraints.txt -d $(WHEELS) $(GPU_PKGS)
	$(PIP) wheel -q --no-deps --no-binary=antlr4-python3-runtime -c constraints.txt -w $(WHEELS) antlr4-python3-runtime
	@ls $(WHEELS)

gpu-check:  ## on a CUDA machine (offline is fine; carry .gpu-wheels/): tests/gpu, bench=gpu, one search per method -> gpu-check/<time>/ (GPU_CHECK=cpu: tiny, on CPU)
	$(GPU_PYTHON) -m nasctl.gpucheck

lint: install  ## ruff
	$(BIN)/ruff check nasctl tests

clean:  ## remove runs and caches (keeps .venv)
	rm -rf runs outputs multirun .pytest_cache
