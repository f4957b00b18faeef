#!/usr/bin/env bash
# The GPU check (issue 23): on a machine with CUDA GPUs, in under 8 minutes,
#   1. trainer samples/s of the demo's policy and recipe on the GPU against the CPU (fleet bench trainer),
#   2. data-parallel training on every GPU present (tests/test_ddp.py with NCCL, one rank per GPU),
#   3. a 5-minute fleet run (fleet demo) whose trainer runs on the GPU (--device auto) and whose
#      robots run on the CPU (fleet robot's default).
# Figures and logs go to OUT (default runs/gpu-check); the last lines printed are the summary.
#
#   bash bench/gpu_check.sh [OUT]             on the GPU machine, from the repo root
#   bash bench/gpu_check.sh --prepare         here (pip reaches PyPI): wheels for a machine that has
#                                             python3 with torch and no network, into .whl/
#
# With .whl/ present the run installs those wheels into /tmp/site first. Python is $PYTHON
# (default python3); it must hold a CUDA build of torch.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
  # What `make setup` installs beyond what a CUDA image with torch, numpy, grpcio, protobuf,
  # safetensors, matplotlib and pillow already holds (CPython 3.12, x86-64).
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl mujoco glfw gymnasium farama-notifications fastapi starlette pydantic pydantic-core \
    annotated-types typing-inspection uvicorn redis pot || exit 1
  ls .whl
  exit 0
fi

OUT=${1:-runs/gpu-check}
mkdir -p "$OUT"
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:$PWD/proto:${PYTHONPATH:-}
GPUS=$($PYTHON -c "import torch; print(torch.cuda.device_count())") || exit 1
if [[ "$GPUS" -lt 1 ]]; then
  echo "gpu_check: torch sees no CUDA device here ($($PYTHON -c 'import torch; print(torch.__version__)'))"; exit 1
fi
nvidia-smi -L | tee "$OUT/gpus.txt"
started=$SECONDS
status=0

echo "== 1/3 trainer: GPU, then CPU ($(nproc) threads)"
$PYTHON -m fleetlearn.cli bench trainer --device cuda --steps 100 --rounds 2 --json "$OUT/trainer_cuda.json" \
  2>&1 | tee "$OUT/trainer_cuda.log" || status=1
$PYTHON -m fleetlearn.cli bench trainer --device cpu --threads "$(nproc)" --steps 40 --rounds 2 \
  --json "$OUT/trainer_cpu.json" 2>&1 | tee "$OUT/trainer_cpu.log" || status=1

echo "== 2/3 data-parallel training on $GPUS GPU(s) (NCCL)"
FLEET_DDP_DEVICE=cuda FLEET_DDP_RANKS=$GPUS $PYTHON -m pytest -q -rs -p no:cacheprovider tests/test_ddp.py \
  2>&1 | tee "$OUT/ddp.log" || status=1

echo "== 3/3 a 5-minute fleet run: trainer on the GPU, robots on the CPU"
$PYTHON -m fleetlearn.cli demo --minutes 5 --dashboard-port -1 --out "$OUT/demo" 2>&1 | tee "$OUT/demo.log" || status=1

$PYTHON - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def figures(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {}
gpu, cpu = figures("trainer_cuda.json"), figures("trainer_cpu.json")
if gpu and cpu:
    g, c = gpu["samples_per_s_default"], cpu["samples_per_s_default"]
    print(f"trainer samples/s: GPU {g}, CPU {c}: {g / c:.1f}x (batch {gpu.get('batch_size')}; "
          f"GPU precision {gpu.get('precision_default')})")
ddp = (out / "ddp.log").read_text() if (out / "ddp.log").exists() else ""
print("DDP:", "passed" if " passed" in ddp and " failed" not in ddp else "FAILED or skipped (see ddp.log)")
demo = figures("demo/summary.json")
if demo:
    rows = [(r.get("version"), r.get("success_rate"), r.get("updates_per_s")) for r in demo["versions"]]
    print("fleet run (version, success, trainer updates/s):", rows)
EOF
echo "gpu_check: done in $((SECONDS - started)) s, exit $status; files in $OUT"
exit $status
