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

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/braze demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
