# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo lint test test-all bench browser docs wheel clean

# The virtualenv is rebuilt when pyproject.toml changes. torch/torchvision are pinned in
# pyproject.toml: on this machine pip takes them from local files (no multi-GB download).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,deploy,serve,stream,track]" 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnlab train mnist-sample --model simple_cnn --epochs 15 --name demo

# The browser tests (report.html, the serving page, /docs, the MLflow UI) drive the system Chromium through
# Playwright; it is installed when possible, else those tests are skipped. (`playwright install` would
# download a browser of its own: not possible offline.)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null 2>&1) \
	  || echo "chromium not installed: the browser tests will be skipped"; }

# ruff lints src/ and tests/ and checks their formatting (`ruff format src tests` fixes it); mypy
# type-checks src/; pyproject.toml configures both, and any finding fails.
# mypy's cache is .venv/mypy_cache: a cold run takes about 30 s, a warm one 1 s.
lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

# pytest exits 5 when it ran no test: that is a failure, not a green run.
test: $(STAMP) browser lint
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no test was executed" >&2; exit 1; fi; exit $$status

test-all: $(STAMP) browser
	$(BIN)/python -m pytest -m "slow or not slow"

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or reference fails.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# The wheel (and nothing else) into dist/, built with this environment's setuptools.
wheel: $(STAMP)
	$(BIN)/python -m build --wheel --no-isolation --outdir dist

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache site dist build
