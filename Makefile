# Two commands from a fresh clone: `make run` and `make test`. Both create .venv/ and install
# everything the project needs from its own files first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# What the browser tests need beyond Python: Debian's Chromium (Playwright's own browser
# download does not work here; never `playwright install`), Pango for WeasyPrint's PDFs,
# and axe-core for the accessibility check, installed into ./node_modules (not committed).
E2E_DEBS := chromium libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
AXE_VERSION := 4.14.1
AXE := node_modules/.axe-core-$(AXE_VERSION)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test check install bench clean e2e-deps screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/alemwatch dev-setup --patients 200
	$(BIN)/alemwatch serve --host 127.0.0.1 --port 8000

test: $(STAMP) e2e-deps
	$(BIN)/alemwatch protocol check
	$(BIN)/pytest -q

# Installs only what is missing, so a re-run offline is quick.
e2e-deps: $(AXE)
	@missing=$$(for p in $(E2E_DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(AXE):
	npm install --prefix $(CURDIR) --no-save --no-package-lock --no-audit --no-fund axe-core@$(AXE_VERSION)
	touch $@

# Re-take the README's screenshots (docs/screenshots/) from the demo cohort.
screenshots: $(STAMP) e2e-deps
	ALEMWATCH_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q tests/e2e/test_screenshots.py

check: $(STAMP)
	$(BIN)/ruff check alemwatch tests bench
	$(BIN)/ruff format --check alemwatch tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/assess_bench.py
	$(BIN)/python bench/interop_bench.py
	$(BIN)/python bench/registry_bench.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache node_modules artifacts
