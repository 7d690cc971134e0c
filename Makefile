# Two entry points a newcomer needs: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed first and explicitly: a bare `torch` requirement on a fresh
# venv would pull a multi-GB CUDA build. pyproject.toml itself keeps the normal range torch>=2.4.
TORCH_SPEC ?= torch==2.13.0
# Omniglot lives next to the checkout in ../shared/data when this machine has it.
SHARED_DATA := $(abspath ../shared/data)
export METAGEN_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/omniglot),$(SHARED_DATA))

.PHONY: setup setup-text demo test test-slow lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# The text data (data.source = "fortunes"): Debian's fortune packages, installed system-wide.
setup-text: setup
	@test -f /usr/share/games/fortunes/tang300 -a -f /usr/share/games/fortunes/literature || \
		(apt-get install -y fortunes fortunes-zh || sudo apt-get install -y fortunes fortunes-zh)

demo: setup
	$(BIN)/metagen demo --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
