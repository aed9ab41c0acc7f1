# The two commands of the README: `make run` starts the app, `make test` runs every test.
#
# Inside an active virtual environment they install into it. Otherwise they make `.venv` in this checkout
# once and reuse it: Debian's, Ubuntu's and Homebrew's own Python refuse `pip install` outside one (PEP 668).
PYTHON ?= python3

ifdef VIRTUAL_ENV
ENV_DIR := $(VIRTUAL_ENV)
else
ENV_DIR := .venv
endif
PY := $(ENV_DIR)/bin/python

.PHONY: run test install install-dev browser venv

venv: $(ENV_DIR)/bin/pip

ifdef VIRTUAL_ENV
$(ENV_DIR)/bin/pip:
	@echo "The active virtual environment ($(VIRTUAL_ENV)) has no pip: deactivate it to use .venv here." >&2; exit 1
else
# python3 -m venv needs ensurepip, which Debian and Ubuntu ship separately (python3-venv): installed here
# when that is possible without a password (root, or passwordless sudo), otherwise a message says what to do.
$(ENV_DIR)/bin/pip:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "EnvNet Sound Lab needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version 2>&1)." \
		       "Run make PYTHON=python3.11 (or newer)." >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		pkg="python$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"; \
		if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
		else echo "$(PYTHON) cannot make a virtual environment: ensurepip is missing. On Debian/Ubuntu run" \
		          "sudo apt-get install python3-venv (or $$pkg), then make again." >&2; exit 1; fi; \
		echo "Installing $$pkg, which python3 -m venv needs..."; \
		$$sudo apt-get update -qq && { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null \
		|| $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }; }
	$(PYTHON) -m venv --clear $(ENV_DIR)
	$(PY) -m pip install -q --upgrade pip
endif

# pip only checks, and installs nothing, when the requirements are already there: a few seconds.
install: venv
	$(PY) -m pip install -q -r requirements.txt

install-dev: venv
	$(PY) -m pip install -q -r requirements-dev.txt

# Debian's Chromium (/usr/bin/chromium, where tests/browser looks) for the browser journeys; Playwright never
# downloads its own browser. Installed only
# where that needs no password; elsewhere the browser tests skip with a reason and the rest still runs.
browser:
	@[ -x /usr/bin/chromium ] || \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "No chromium and no apt-get here: the browser tests will be skipped."; \
		elif [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		elif sudo -n true 2>/dev/null; then \
			sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "No chromium, and installing it needs a password: the browser tests will be skipped" \
			     "(sudo apt-get install chromium, then make test, runs them)."; \
		fi

run: install
	$(PY) -m streamlit run serve.py

test: install-dev browser
	$(PY) -m ruff check .
	$(PY) -m pytest
