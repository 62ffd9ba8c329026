# The two commands: `make run` (the whole pipeline on the embedded sample scan) and
# `make test` (the whole test suite). Both create .venv and install the project first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synthqa-installed
# One thread pool per process is plenty on small machines; TensorFlow's log noise is not.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test lab bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name synthqa --display-name "SynthQA (.venv)" >/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m helpers.batch configs/sample.yaml --profile paper

test: $(STAMP)
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulation.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_subject.py

clean:
	rm -rf results .pytest_cache
