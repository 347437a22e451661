# The commands a developer and CI run. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
DEMO := $(BIN)/mailsync --config fixtures/demo/mailsync.toml

.PHONY: help install system-deps services demo test test-fast check format bench eval train fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP) ## create .venv and install mailsync with its dev tools

system-deps: ## install the Debian packages the tests need (dovecot, isync, notmuch); idempotent
	bash scripts/install-system-deps.sh

services: ## start the local PostgreSQL for the tests if it is installed but stopped; idempotent
	bash scripts/start-postgres.sh

demo: $(STAMP) ## run the main job on the bundled demo mailbox into var/demo/ (SQLite)
	$(DEMO) db upgrade
	$(DEMO) crm import fixtures/demo/crm
	$(DEMO) import fixtures/demo/Maildir --mailbox dana
	$(DEMO) digest --preview var/demo
	$(DEMO) status

test: $(STAMP) system-deps services check ## install everything, lint, type-check, then run every test
	$(BIN)/pytest

test-fast: $(STAMP) ## pure unit tests only (no servers, no slow tests)
	$(BIN)/pytest -m "not integration and not slow" -q

check: $(STAMP) ## ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

eval: $(STAMP) ## score matching on the labelled corpus: dev and the locked holdout side by side, 95% intervals
	$(BIN)/python -m mailsync.evaluation --corpus fixtures/corpus

train: $(STAMP) ## retrain the intent classifier on the dev corpus, calibrate it, write nlp/models/intent
	$(BIN)/python -m mailsync.evaluation.train

fuzz: $(STAMP) ## fuzz parse and identity with hostile mail, 25x the examples of make test (~10 min)
	HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/unit/test_fuzz.py -q --timeout=1800

bench: $(STAMP) system-deps services ## capture side by side on 10,000 messages (mbsync, bare fetch, notmuch, mail-parser; ~30-50 min), writes BENCHMARKS.md; then match/model/memory
	$(BIN)/python -m bench.run

clean: ## remove var/ (demo database, archive) and caches; keeps .venv
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
