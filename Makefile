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

.PHONY: setup demo test test-mujoco-3.3 setup-lerobot test-lerobot proto bench browser clean

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

# sim/ must keep working on MuJoCo 3.3.0, which common task suites pin: its tests run again
# in a small side environment holding that release (no torch needed).
MJ33 := $(VENV)-mujoco-3.3
test-mujoco-3.3:
	test -x $(MJ33)/bin/python || $(PYTHON) -m venv $(MJ33)
	$(MJ33)/bin/python -m pip install -q --disable-pip-version-check mujoco==3.3.0 'gymnasium>=1.0' numpy pytest pytest-timeout
	PYTHONPATH=. $(MJ33)/bin/python -m pytest -q -p no:cacheprovider --noconftest \
		tests/test_sim.py tests/test_sim_tasks.py tests/test_sim_variants.py

# Physical arms through LeRobot (fleet_lerobot/) live in their own environment: LeRobot 0.4.4 pins
# torch < 2.11 and brings about 8 GB (its torch build with CUDA libraries). The main environment
# never imports it; tests/test_lerobot.py runs here and is skipped (with the reason) elsewhere.
# The environment is kept outside the checkout, so a fresh clone reuses it; the install below
# only re-points it at this checkout when LeRobot is already there (seconds).
LEROBOT_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fleetlearn/venv-lerobot

setup-lerobot:
	test -x $(LEROBOT_VENV)/bin/python || $(PYTHON) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[lerobot,dev]' \
		-e plugins/lerobot_robot_fleet_sim

test-lerobot: setup-lerobot
	$(LEROBOT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_lerobot.py

# Headless Chromium for the dashboard's browser tests (Debian's package; Playwright drives it with
# executable_path, so no browser is downloaded). Without it those tests are skipped, with the reason.
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

# Regenerates the committed gRPC stubs from proto/fleet/v1/fleet.proto.
proto: setup
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto \
		--grpc_python_out=proto proto/fleet/v1/fleet.proto

bench: setup
	$(BIN)/fleet bench ingest --json bench/results/ingest.json
	$(BIN)/fleet bench weights --json bench/results/weights.json
	$(BIN)/fleet bench sim --json bench/results/sim.json
	$(BIN)/fleet bench ptp --json bench/results/ptp.json
	$(BIN)/fleet bench float --json bench/results/float.json --plot docs/float.png
	$(BIN)/fleet bench dashboard --json bench/results/dashboard.json

clean:
	rm -rf $(VENV) build *.egg-info
