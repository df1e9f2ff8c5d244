# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create .venv when missing and install the CPU build of torch first, pinned.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test test-all lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev,cueq,torchsim]"
	touch $@

demo: install
	$(VENV)/bin/molnet demo --output demo_out

LINTED := molnet tests benchmarks tools

test: install lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" --durations=10

lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

test-all: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=10

clean:
	rm -rf demo_out runs .pytest_cache
