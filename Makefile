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

.PHONY: setup setup-text setup-fonts setup-fonts-cjk setup-browser demo serve test test-slow lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev,serve]'
	touch $@

setup: $(VENV)/.installed

# The text data (data.source = "fortunes"): Debian's fortune packages, installed system-wide.
setup-text: setup
	@test -f /usr/share/games/fortunes/tang300 -a -f /usr/share/games/fortunes/literature || \
		(apt-get install -y fortunes fortunes-zh || sudo apt-get install -y fortunes fortunes-zh)

# The fonts data (data.source = "fonts"): Debian's font packages, listed in src/metagen/data/fonts.py
# (PACKAGES), installed system-wide; ~100 MB of downloads, ~600 usable faces.
setup-fonts: setup
	@pkgs="$$($(BIN)/python -c 'from metagen.data.fonts import PACKAGES; print(" ".join(PACKAGES))')"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$pkgs >/dev/null || \
		(apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $$pkgs >/dev/null) || \
		sudo apt-get install -y -q --no-install-recommends $$pkgs >/dev/null

# The CJK fonts data (data.scripts = ["hanzi"]): Debian's CJK font packages (CJK_PACKAGES in
# src/metagen/data/fonts.py), downloaded with apt and unpacked into $METAGEN_CACHE_DIR/fonts-cjk rather than
# installed, so that their Latin glyphs do not join the Latin fonts data; ~310 MB of downloads, ~570 MB unpacked.
setup-fonts-cjk: setup
	@dest="$$($(BIN)/python -c 'from metagen.data.fonts import cjk_dir; print(cjk_dir())')"; \
		pkgs="$$($(BIN)/python -c 'from metagen.data.fonts import CJK_PACKAGES; print(" ".join(CJK_PACKAGES))')"; \
		debs="$$(mktemp -d)"; mkdir -p "$$dest" && cd "$$debs" && \
		(apt-get download -q $$pkgs >/dev/null 2>&1 || \
			(apt-get update -q >/dev/null && apt-get download -q $$pkgs >/dev/null)) && \
		for d in *.deb; do dpkg -x "$$d" "$$dest"; done && rm -rf "$$debs" && \
		echo "CJK fonts unpacked into $$dest"

# The browser test (tests/test_browser.py): Playwright, driving Debian's Chromium (no download from
# Playwright's CDN). Where neither can be installed the test is skipped and says so.
$(VENV)/.browser: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev,serve,browser]'
	touch $@

setup-browser: $(VENV)/.browser
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
		sudo apt-get install -y -q chromium >/dev/null 2>&1 || \
		echo "make: no Chromium could be installed; tests/test_browser.py will be skipped"

demo: setup
	$(BIN)/metagen demo --out runs/demo

# The web app over runs/ (make demo first): http://127.0.0.1:8000/
serve: setup
	$(BIN)/metagen serve

test: setup
	-@$(MAKE) --no-print-directory setup-browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
