# The two commands: `make run` (the whole pipeline on both example scans) and `make test`
# (the whole test suite). Both create .venv, install the project and fetch the example
# scans first (the dipy sample ships with dipy; the in-vivo scan comes from the mdt 1.2.7
# wheel on PyPI, pinned by its sha256, unpacked into data/invivo/; mdt is never installed).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synthqa-installed
INVIVO := data/invivo/.fetched
# TensorFlow's start-up log lines are noise in a terminal.
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: run test test-fast lab bench data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name synthqa --display-name "SynthQA (.venv)" >/dev/null
	touch $(STAMP)

$(INVIVO): $(STAMP) helpers/scan/datasets.py
	$(BIN)/python -m helpers.scan.datasets data/invivo
	touch $(INVIVO)

data: $(INVIVO)

run: $(STAMP) $(INVIVO)
	$(BIN)/synthqa run configs/sample.yaml configs/invivo.yaml --profile demo

test: $(STAMP) $(INVIVO)
	$(BIN)/python -m pytest

test-fast: $(STAMP) $(INVIVO)
	$(BIN)/python -m pytest -m "not slow"

lab: $(STAMP) $(INVIVO)
	$(BIN)/jupyter lab

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulation.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_subject.py
	$(BIN)/python benchmarks/bench_memory.py --profile quick --jobs 2

clean:
	rm -rf results .pytest_cache
