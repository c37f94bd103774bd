# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgetune-installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

# The TUI on the built-in demo in a terminal; headless with its report printed when there is none.
demo: $(STAMP)
	$(VENV)/bin/edgetune demo

test: $(STAMP) lint
	$(PY) -m pytest -q -ra

# Lint and import order (ruff, configured in pyproject.toml); `make test` runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check edgetune convert tui tests scripts

clean:
	rm -rf runs .pytest_cache
