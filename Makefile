# fleetlearn: the README's two commands are `make demo` and `make test`; both set up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_ARGS ?=
TEST_ARGS ?=

# One torch/BLAS thread per process: robots, learner and trainer share the cores.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export MUJOCO_GL ?= egl

.PHONY: setup demo test proto bench clean

setup: $(STAMP)

# Re-runs only when the dependency list or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/fleet demo $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest $(TEST_ARGS)

# Regenerates the committed gRPC stubs from proto/fleet/v1/fleet.proto.
proto: setup
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto \
		--grpc_python_out=proto proto/fleet/v1/fleet.proto

bench: setup
	$(BIN)/fleet bench ingest --json bench/results/ingest.json
	$(BIN)/fleet bench weights --json bench/results/weights.json

clean:
	rm -rf $(VENV) build *.egg-info
