"""Benchmarks: `fleet bench NAME [--json FILE] [flags]`. Each prints its figures and the ratio to a
baseline measured in the same run, and writes them as one flat JSON object."""

from __future__ import annotations

import importlib
import json
import platform
import sys
from pathlib import Path

BENCHMARKS = {"dashboard": "bench.dashboard", "data-ceiling": "bench.data_ceiling", "transport-vs-lerobot": "bench.transport_vs_lerobot", "float": "bench.float", "ingest": "bench.ingest", "rlco": "bench.rlco", "scale": "bench.scale", "scaling": "bench.scaling", "soak": "bench.soak", "stop-latency": "bench.stop_latency", "ptp": "bench.ptp", "sim": "bench.sim", "trainer": "bench.trainer", "weights": "bench.weights"}


def machine() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def run_benchmark(name: str, json_path: str | None, argv: list[str]) -> dict:
    if name not in BENCHMARKS:
        sys.exit(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    figures = importlib.import_module(BENCHMARKS[name]).main(argv)
    figures["machine"] = machine()
    print(json.dumps(figures, indent=2))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2))
    return figures
