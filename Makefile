# Two entry points for a fresh machine (see README "Quickstart"):
#   make demo   - set up .venv and run the three-bank federation over mutual TLS
#   make test   - set up .venv and run the test suite CI runs (FEDRISK_TESTS=all make test: every variant too)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedrisk-installed

.PHONY: demo test setup bench clean

$(STAMP): pyproject.toml setup.py fedrisk/crypto/_montgomery.c fedrisk/crypto/_idhash.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the ray extra: CI runs the Ray compute test (tests/runtime/test_ray_compute.py, marker `ray`)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	# RR22 PSI (optional `[psi] protocol = "rr22"`): spu's wheel pins numpy<2 and JAX that fedrisk never
	# imports, so it goes in without its dependencies; best effort (the rr22 tests skip with a message)
	$(PY) -m pip install --quiet --no-deps 'spu==0.9.5' || echo 'warning: spu not installed; [psi] protocol = "rr22" is unavailable'
	$(PY) -m fedrisk.crypto.montgomery
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedrisk demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=25  # the slowest tests in every CI log: the suite has a 30-minute budget

bench: $(STAMP)
	mkdir -p bench-out
	for case in horizontal-lr horizontal-gbdt secagg paillier psi vertical-lr vertical-secureboost; do \
	  $(PY) benchmarks/run.py $$case --out bench-out/$$case.json || exit 1; done

clean:
	rm -rf $(VENV) runs bench-out .pytest_cache
