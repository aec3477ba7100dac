# evalfleet: two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test typecheck venv clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/evalfleet demo

# Two workers that steal tests from each other (the local Ray is reused per worker, see
# tests/integration/fleet_support.py): most of the suite waits on control loops and browsers,
# so two workers nearly halve it (a third was faster, 570 vs 618 s with one core busy, but
# made the real-time and browser tests flaky on two cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/store.py

clean:
	rm -rf $(VENV) .pytest_cache
