# `make demo` and `make test` set up a virtual environment when it is missing.
# VENV=/path/to/existing/venv reuses one (torch with its CUDA libraries is ~6 GB);
# pip's cache is kept, so a fresh clone does not download everything again.
# Everything is installed through constraints.txt (exact versions); `make lock`
# regenerates it from pyproject.toml in a scratch venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
EXTRAS := test,corpus,text,formats
PIP_FLAGS := --disable-pip-version-check -q
# The stamp lives in this checkout, so pointing VENV at another clone's venv still
# installs *this* checkout in editable mode.
STAMP := .make-installed-$(subst /,_,$(abspath $(VENV)))

.PHONY: demo test lint docs install reinstall check-env lock clean-stamp

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || { echo "creating virtual environment $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[$(EXTRAS)]'
	@$(PY) scripts/check_env.py constraints.txt
	@touch $@

install: $(STAMP)

# Runs every time: a venv whose torch family drifted from the pins (or no longer
# imports) stops here with one line, even when the stamp says it was installed.
check-env: $(STAMP)
	@$(PY) scripts/check_env.py constraints.txt

reinstall:
	rm -f $(STAMP)
	$(PY) -m pip install $(PIP_FLAGS) --force-reinstall --no-deps -c constraints.txt \
	    $$(grep -E '^(torch|torchaudio|torchvision)==' constraints.txt)
	$(MAKE) install

demo: check-env
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/tiny/run.sh

lint: check-env
	$(PY) -m ruff check cpc_seq tests benchmarks recipes scripts

test: check-env lint
	$(PY) -m pytest -q tests

# The documentation site (README.md as its home page, docs/*.md by topic) into site/.
docs: check-env
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Regenerate constraints.txt: a scratch venv, the torch-family pins of pyproject.toml
# and the newest releases of everything else, frozen.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install $(PIP_FLAGS) -e '.[$(EXTRAS)]'
	{ echo "# Exact versions for every install (pip install -c constraints.txt)."; \
	  echo "# Regenerate with: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^cpc_seq' ; } > constraints.txt
	rm -rf .lock-venv
	@echo "wrote constraints.txt"

clean-stamp:
	rm -f .make-installed-*
