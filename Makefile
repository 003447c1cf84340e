# Two commands matter: `make demo` (the whole pipeline on the phantom) and `make test`.
# Each creates .venv and installs the project into it when missing or when pyproject changes.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_SPEC ?= papermill_runs/demo.yaml
DEMO_WORKERS ?= 2  # stages of one step (02's backbones, 03's map jobs) run side by side

.PHONY: demo test test-fast lab bench clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['tool']['pneumoloc']['no-deps-test'])")
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pneumoloc run $(DEMO_SPEC) --executor local --workers $(DEMO_WORKERS)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m "not notebooks"

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean-demo:
	rm -rf papermill_runs/demo figures/demo
