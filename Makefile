# Two commands on a fresh machine:  `make demo`  (whole pipeline end to end)  and  `make test`  (every test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
RFR    := $(VENV)/bin/rfr
STAMP  := $(VENV)/.installed

.PHONY: install models demo test test-unit lint tools bench docs up down status clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "RFR needs Python 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# Keep the venv's own pip: pip >= 24 flags mediapipe's mis-tagged WHEEL file in `pip check`.
	$(PY) -m pip install --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

models: install
	$(RFR) models fetch

demo: models
	$(RFR) demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # the layer contract in pyproject.toml: core <- domain <- services <- tools

tools:
	bash .ci/install-tools.sh

test: models lint tools
	$(PY) -m pytest -ra tests

test-unit: install
	$(PY) -m pytest -q tests/unit

bench: models
	$(PY) -m benchmarks.run --out benchmarks/results/latest.json

docs: install  # docs/configuration.md from rfr/core/settings.py (tests/unit/test_configuration_doc.py checks it)
	$(PY) -m rfr.tools.configdoc

up: models
	$(RFR) up
down:
	$(RFR) down
status:
	$(RFR) status

clean:
	-$(RFR) down
	rm -rf .rfr
