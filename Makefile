# `make run`: set up and run the main job on the embedded defaults. `make test`: set up, lint, build the docs (a broken
# link or anchor, or a page missing from mkdocs.yml's nav, fails it) and run the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint docs

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
	OMP_NUM_THREADS=1 $(PY) -m workbench.train --multirun +ablation=main_local_global experiment=recall_cpu \
		hydra/launcher=joblib hydra.sweep.dir=multirun/main_local_global
	$(PY) -m analysis.report multirun/main_local_global

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

docs: setup
	$(PY) -m mkdocs build --strict --quiet --site-dir build/site

test: lint docs
	$(PY) -m pytest -n 2 --dist worksteal -q
