# Targets the README uses. `make setup` once, then `make run` / `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := "torch>=2.2,<=2.14.1" "torchvision>=0.17,<=0.29.1"

.PHONY: setup run test test-all bench bench-families sweep clean help

help:
	@echo "make setup   create $(VENV) and install gencompare with its test and sweep extras"
	@echo "make run     the main job: train the default GAN on MNIST (offline: the 5,000-digit sample), W&B offline"
	@echo "make test    the test suite (fast tests; CI runs this)"
	@echo "make test-all  every test, the slow end-to-end runs included"
	@echo "make bench   benchmarks/ (Parzen protocol timing)"
	@echo "make bench-families  steps/s and time to draw 10,000 samples for each family (on the GPU when there is one)"

$(BIN)/gencompare: pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e ".[test,sweep]"
	touch $(BIN)/gencompare

setup: $(BIN)/gencompare

run: setup
	$(BIN)/gencompare train

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/parzen.py

bench-families: setup
	$(BIN)/python benchmarks/families.py $(ARGS)

clean:
	rm -rf outputs multirun wandb .pytest_cache
