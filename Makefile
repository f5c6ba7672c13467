# The two commands of the README:  `make lab`  and  `make test`.
# Both create .venv (Python 3.11 + pip) and install the project into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup lab test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.1"
	$(PY) -m pip install --quiet -e ".[lab,dev]"
	@touch $(STAMP)

lab: setup
	$(PY) tools/lab.py $(LAB_ARGS)

# Everything: reference vs checks, mutants, notebooks in every mode, JupyterLab.
test: setup
	$(PY) -m pytest -n 2 --dist loadfile

# Skips the slow cases (notebooks, JupyterLab, training runs).
test-fast: setup
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .workbook
