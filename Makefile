# Two commands on a fresh machine:
#   make quickstart   install, then train + evaluate + sample the quickstart preset
#   make test         install, then run the test suite
#
# torch is installed first, pinned, so that pip never resolves a second build of it:
# on PyPI `torch==2.13.0` is the CUDA build on Linux x86_64 (right for GPU users); machines
# that keep a local CPU wheel of the same version pick that one up. Override with e.g.
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install test quickstart bench bench-quick clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

quickstart: install
	$(BIN)/python scripts/quickstart.py

bench: install
	$(BIN)/python bench/run_all.py

bench-quick: install
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf $(VENV) outputs runs bench/results
