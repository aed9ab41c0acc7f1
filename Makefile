# The two commands of the README: `make run` starts the app, `make test` runs every test.
PY ?= python3

.PHONY: run test install install-dev browser

install:
	$(PY) -m pip install -q -r requirements.txt

install-dev:
	$(PY) -m pip install -q -r requirements-dev.txt

# Debian's Chromium for the browser journeys (Playwright must never download its own browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install
	$(PY) -m streamlit run app.py

test: install-dev browser
	$(PY) -m ruff check .
	$(PY) -m pytest
