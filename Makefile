# Two entry points for a fresh machine (see README "Quickstart"):
#   make demo   - set up .venv and run the three-bank federation over mutual TLS
#   make test   - set up .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedrisk-installed

.PHONY: demo test setup bench clean

$(STAMP): pyproject.toml setup.py fedrisk/crypto/_montgomery.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m fedrisk.crypto.montgomery
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedrisk demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	mkdir -p bench-out
	for case in horizontal-lr secagg paillier psi vertical-lr vertical-secureboost; do \
	  $(PY) benchmarks/run.py $$case --out bench-out/$$case.json || exit 1; done

clean:
	rm -rf $(VENV) runs bench-out .pytest_cache
