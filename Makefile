# braze: the two commands of the README.
#   make demo   set up .venv and run the demo (compile a small Llama, check, time)
#   make test   set up .venv with the test extras and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
# The CPU build of torch (a newer range would pull a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?= -n 2 --dist loadfile

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test]"
	touch $@

.PHONY: demo test postgres
demo: $(VENV)/.installed
	$(VENV)/bin/python -m tools.demo

# The tuning-database tests start a throwaway PostgreSQL server (initdb +
# pg_ctl on loopback); install the server when it is missing and we may
# (root with apt-get, as on CI); otherwise those tests skip and say why.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing PostgreSQL for the tuning-database tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL is not installed and cannot be here (not root or no apt-get): its tests will skip"; fi

test: $(VENV)/.installed postgres
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
