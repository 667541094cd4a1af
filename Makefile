# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make serve   start the service on the model shipped in models/ (HOST, PORT)
#   make test    lint, type-check (mypy --strict) and run the test suite
# Both create .venv on first use and install only what is missing (pyproject.toml + constraints.txt).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: install serve test lint format clean help

help:
	@echo "make serve   start the service on models/ (HOST=$(HOST) PORT=$(PORT))"
	@echo "make test    install what the tests need, lint, type-check, run pytest"
	@echo "make install install everything (service, training, ray, dev) into $(VENV)"
	@echo "make lint    ruff check, mypy --strict"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0] + " at " + sys.executable)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip

# Stamps record what was installed; they are rebuilt when the declared dependencies change.
$(VENV)/.installed-service: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[service]'
	@touch $@

$(VENV)/.installed-all: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[service,training,ray,dev]'
	@touch $@ $(VENV)/.installed-service

install: $(VENV)/.installed-all

serve: $(VENV)/.installed-service
	$(BIN)/python -m service serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-all
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(VENV)/.installed-all
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(VENV)/.installed-all
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
