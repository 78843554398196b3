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
# The lowest releases pyproject.toml allows (.ci/constraints-lowest.txt), in a venv of their own: CI runs the
# tests that exercise the Hugging Face libraries there too, so a floor that no longer works fails CI, not a user.
LOWEST_VENV ?= .venv-lowest
LOWEST_TESTS ?= tests/test_conformance.py tests/test_models.py tests/test_memory.py tests/test_remote_code.py \
	tests/test_tokenization.py tests/test_data.py tests/test_cli_train.py tests/test_hub.py tests/test_public_api.py

.PHONY: install test test-lowest quickstart bench bench-quick clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-lowest: $(LOWEST_VENV)/.installed
	$(LOWEST_VENV)/bin/python -m pytest -q $(LOWEST_TESTS)

$(LOWEST_VENV)/.installed: pyproject.toml .ci/constraints-lowest.txt
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -c "import torch" 2>/dev/null || $(LOWEST_VENV)/bin/pip install -q $(TORCH)
	$(LOWEST_VENV)/bin/pip install -q -e ".[dev]" -c .ci/constraints-lowest.txt
	touch $@

quickstart: install
	$(BIN)/python scripts/quickstart.py

bench: install
	$(BIN)/python bench/run_all.py

bench-quick: install
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf $(VENV) $(LOWEST_VENV) outputs runs bench/results
