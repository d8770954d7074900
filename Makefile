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

test-sqlite: $(STAMP)
	CRMBOT_TEST_DATABASE=sqlite $(BIN)/python -m pytest

test-postgresql: $(STAMP)
	CRMBOT_TEST_DATABASE=postgresql CRMBOT_TEST_PG_URL=$(PG_URL) $(BIN)/python -m pytest

## Run the conversation tests (docs/conversation-tests.md) in process, on a throw-away copy of the demo data.
.PHONY: test-conversations
test-conversations: $(STAMP)
	$(BIN)/crmbot test conversations tests/conversations/*.yml

clean:
	rm -rf $(VENV) var crmbot.db crmbot.db-wal crmbot.db-shm .pytest_cache .mypy_cache .ruff_cache .hypothesis
