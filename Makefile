# Targets the README uses. `make setup` once, then `make run` / `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := "torch>=2.2,<=2.14.1" "torchvision>=0.17,<=0.29.1"
# make gpu-check: the interpreter (the venv's where there is one, else the machine's python3,
# as on the device machine, which has torch but no venv), the device, the results folder
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
DEVICE ?= cuda
OUT ?= benchmarks/results
# the packages gencompare needs that the device machine lacks (/work/.library/device/KINDS.md),
# each dependency named (pip's --no-deps); antlr4's 4.9.3 exists as source only, so it is built
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 mlxtend==0.25.0
GPU_SDISTS := antlr4-python3-runtime==4.9.3
GPU_SITE ?= /tmp/gencompare-site
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64

.PHONY: setup run test test-all bench bench-families gpu-check gpu-wheels sweep clean help

help:
	@echo "make setup   create $(VENV) and install gencompare with its test and sweep extras"
	@echo "make run     the main job: train the default GAN on MNIST (offline: the 5,000-digit sample), W&B offline"
	@echo "make test    the test suite (fast tests; CI runs this)"
	@echo "make test-all  every test, the slow end-to-end runs included"
	@echo "make bench   benchmarks/ (Parzen protocol timing)"
	@echo "make bench-families  steps/s and time to draw 10,000 samples for each family (on the GPU when there is one)"
	@echo "make gpu-check  the GPU checks in one command, under 8 min on one GPU: benchmarks/results/*-cuda.md (OUT=dir)"
	@echo "make gpu-check DEVICE=cpu OUT=dir  the same at toy sizes on a CPU (*-cpu-toy.md; not to commit)"
	@echo "make gpu-wheels  the wheels the device machine lacks (hydra-core, omegaconf, antlr4, mlxtend) into .whl/"

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

# no setup: the device machine runs the repo root with its own python3 and no network;
# .whl/ (make gpu-wheels) is installed into $(GPU_SITE) when the imports fail
gpu-check:
	@if [ -d .whl ] && ! $(GPU_PY) -c "import hydra, omegaconf, mlxtend" 2>/dev/null; then \
	  $(GPU_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
	    --target $(GPU_SITE) .whl/*.whl || exit 1; fi
	PYTHONPATH=$(CURDIR):$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY) benchmarks/gpu_check.py \
	  --device $(DEVICE) --out $(OUT) $(ARGS)

gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(addprefix --platform ,$(GPU_PLATFORMS)) -d .whl $(GPU_WHEELS)
	$(PY) -m pip wheel -q --no-deps -w .whl $(GPU_SDISTS)
	@du -sh .whl

clean:
	rm -rf outputs multirun wandb .pytest_cache
