# `make run`: set up and run the main job on the embedded defaults. `make test`: set up and run the tests (lint, the
# docs build, every test but the numerical ones, then the numerical ones once per CPU kernel set). `make test-fast`:
# the fast tier (every test file and module, a few cases of each long table; docs/testing.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-fast test-kernels lint docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: setup
	$(PY) -m analysis.params --all
	$(PY) -m analysis.kv_cache --all --context 32768
	OMP_NUM_THREADS=1 $(PY) -m workbench.train --multirun +ablation=main_local_global experiment=reach_cpu \
		hydra/launcher=joblib hydra.sweep.dir=multirun/main_local_global
	$(PY) -m analysis.report multirun/main_local_global

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

docs: setup
	$(PY) -m mkdocs build --strict --quiet --site-dir build/site

test: lint docs
	$(PY) -m pytest -n 2 --dist worksteal -q -m "not numerics"
	$(MAKE) test-kernels

test-fast: setup
	$(PY) -m pytest -n 2 --dist worksteal -q -m "not slow"

# The numerical tests once per x86 kernel set torch can select here (ATEN_CPU_CAPABILITY; an unsupported value falls
# back to the best one, so a set runs only where torch reports it), oneDNN capped to the same instruction set, so a
# rounding that drifts on another CPU's kernels fails here. docs/testing.md.
KERNEL_SETS := default:SSE41 avx2:AVX2 avx512:ALL
test-kernels: setup
	@for pair in $(KERNEL_SETS); do \
		set=$${pair%%:*}; isa=$${pair##*:}; \
		got=$$(ATEN_CPU_CAPABILITY=$$set $(PY) -c "import torch; print(torch.backends.cpu.get_cpu_capability())"); \
		if [ "$$got" != "$$(echo $$set | tr a-z A-Z)" ]; then echo "kernel set $$set: not on this CPU, skipped"; continue; fi; \
		echo "kernel set $$set (oneDNN ISA $$isa)"; \
		ATEN_CPU_CAPABILITY=$$set ONEDNN_MAX_CPU_ISA=$$isa $(PY) -m pytest -n 2 --dist worksteal -q -m numerics || exit 1; \
	done
