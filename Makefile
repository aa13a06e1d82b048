# Spendtracker: `make run` for a local portal with demo data, `make test` for the suite.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# `make run` is local development: SQLite, a filesystem Celery broker, console email,
# unless the environment says otherwise (see .env.example). Tests run as production does,
# on the PostgreSQL and Redis of this machine unless DATABASE_URL / CELERY_BROKER_URL
# point elsewhere.
run migrations-check: export DJANGO_DEBUG ?= true
# Links in emails (alerts, reports) point at the portal `make run` serves.
run: export SITE_URL ?= http://127.0.0.1:$(PORT)
# A fixed key for local development only, so that the portal can store credentials and
# webhooks; a deployment sets its own (README, Configuration).
run: export FIELD_ENCRYPTION_KEY ?= bG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktMzJieXQ=

# Tests are real: PostgreSQL and Redis, as on this machine and in CI.
test: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/spendtracker
test: export CELERY_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint format migrations-check venv clean

venv: $(STAMP)

$(STAMP): requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $(STAMP)

# One worker for everything: the default queue and the imports queue (settings.py).
run: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo "Portal: http://127.0.0.1:$(PORT)/  (Ctrl-C stops the portal and the worker)"
	@trap 'trap - INT TERM EXIT; kill 0' INT TERM EXIT; \
	$(BIN)/celery -A spendtracker worker --queues celery,imports --beat --schedule .run/celerybeat-schedule --pool=solo --loglevel=WARNING & \
	$(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrations-check: venv
	$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) .run db.sqlite3 staticfiles
