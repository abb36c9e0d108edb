# make install | test | demo | bench | clean. `make demo` and `make test` do all the set-up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DATA := demo_data

.PHONY: install test test-all demo bench clean

install: $(STAMP)

# Rebuilt only when pyproject.toml or constraints.txt change: seconds when up to date.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ''

# The embedded-default study, offline on CPU: synthetic corpus -> 2 pretrained backbones -> 16 cells -> report
# (two workers: the two backbones pretrain side by side, then the cells run two at a time).
demo: install
	test -f $(DEMO_DATA)/train.jsonl || $(VENV)/bin/ablate data demo $(DEMO_DATA) --sentences 900
	$(VENV)/bin/ablate run studies/quickstart.yaml --workers 2
	$(VENV)/bin/ablate report studies/quickstart.yaml

bench: install
	$(PY) bench/trainer_bench.py
	$(PY) bench/report_bench.py

clean:
	rm -rf $(VENV) $(DEMO_DATA) .pytest_cache
