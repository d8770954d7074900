# The two commands a newcomer needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: run test test-sqlite test-postgresql lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Set up, load the demo data and run the assistant on http://127.0.0.1:8080 (SQLite by default).
run: $(STAMP)
	$(BIN)/crmbot db upgrade
	$(BIN)/crmbot demo
	$(BIN)/crmbot run

## Set up and run lint plus the whole test suite on SQLite and on PostgreSQL.
test: $(STAMP) lint test-sqlite test-postgresql

lint: $(STAMP)
	$(BIN)/ruff check .

test-sqlite: $(STAMP) rasa-if-available
	CRMBOT_TEST_DATABASE=sqlite $(BIN)/python -m pytest

test-postgresql: $(STAMP)
	CRMBOT_TEST_DATABASE=postgresql CRMBOT_TEST_PG_URL=$(PG_URL) $(BIN)/python -m pytest -m "not rasa and not own_database"

## The quick loop while developing: lint, then the suite on SQLite without the real-Rasa and slow end-to-end tests.
.PHONY: test-fast
test-fast: $(STAMP) lint
	CRMBOT_TEST_DATABASE=sqlite $(BIN)/python -m pytest -x -q -m "not rasa and not slow and not own_database"

## The real Rasa 3.6 server for the `rasa` NLU backend's tests (tests/test_nlu_rasa_server.py, in the
## SQLite run only): a cached venv outside the repo, built once per machine (needs Python 3.10, ~2.7 GB).
.PHONY: rasa rasa-if-available
RASA_SETUP := tests/rasa/setup_rasa.sh

rasa:
	@bash $(RASA_SETUP)

rasa-if-available:
	@if bash $(RASA_SETUP) --find-python >/dev/null; then bash $(RASA_SETUP); \
	else echo "Python 3.10 not found: the real-Rasa tests are skipped"; fi

## Run the conversation tests (docs/conversation-tests.md) in process, on a throw-away copy of the demo data.
.PHONY: test-conversations
test-conversations: $(STAMP)
	$(BIN)/crmbot test conversations tests/conversations/*.yml
	$(BIN)/crmbot test conversations tests/conversations/*.yml --channel terminal

clean:
	rm -rf $(VENV) var crmbot.db crmbot.db-wal crmbot.db-shm .pytest_cache .mypy_cache .ruff_cache .hypothesis
