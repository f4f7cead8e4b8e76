# `make demo` and `make test` set up a virtual environment when it is missing.
# VENV=/path/to/existing/venv reuses one (torch with its CUDA libraries is ~6 GB);
# pip's cache is kept, so a fresh clone does not download everything again.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# The stamp lives in this checkout, so pointing VENV at another clone's venv still
# installs *this* checkout in editable mode.
STAMP := .make-installed-$(subst /,_,$(abspath $(VENV)))

.PHONY: demo test lint install clean-stamp

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating virtual environment $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test,corpus,text]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/tiny/run.sh

lint: $(STAMP)
	$(PY) -m ruff check cpc_seq tests benchmarks recipes scripts

test: $(STAMP) lint
	$(PY) -m pytest -q tests

clean-stamp:
	rm -f .make-installed-*
