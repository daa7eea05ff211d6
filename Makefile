# make demo / make test / make bench / make gpu-check: each builds .venv with pip on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-losses test lint typecheck pytest fuzz bench test-gpu gpu-check clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/contrastkit run --data digits --method simclr,supcon,ce

demo-losses: $(STAMP)
	$(PY) benchmarks/demo_losses.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q -n 2

test: lint typecheck pytest

# 10,000 seeded float32-vs-float64 cases (make test runs the first 5,000); see tests/losses/test_fuzz.py
fuzz: $(STAMP)
	CONTRASTKIT_FUZZ_CASES=10000 $(PY) -m pytest -q -n 2 tests/losses/test_fuzz.py

# the device tests over the CPU and CUDA (CUDA cases skip, with the reason, without a GPU)
test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -q -n 2

# the device tests, then benchmarks/gpu.py, into gpu-check-<date>-<time>/, with a summary
gpu-check: $(STAMP)
	CK_PYTHON=$(PY) bash benchmarks/gpu_check.sh

bench: $(STAMP)
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/precision.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
