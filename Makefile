# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# IMGCLF_CONSTRAINTS= (empty) skips the torch pin, for GPU users who installed their own torch.
IMGCLF_CONSTRAINTS ?= constraints.txt
CONSTRAINT_FLAG = $(if $(IMGCLF_CONSTRAINTS),-c $(IMGCLF_CONSTRAINTS),)

.PHONY: demo test install install-test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -q --disable-pip-version-check $(CONSTRAINT_FLAG) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q --disable-pip-version-check $(CONSTRAINT_FLAG) -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/imgclf demo

test: install-test
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
