"""Stop and pause latency: how long after a person presses Pause, Resume or Stop on the
dashboard the robots act on it.

A `fleet learner` (no trainer) serves a small published policy to N MuJoCo robots running at
their real 10 Hz; the bench presses Pause then Resume for the whole fleet `--rounds` times
through the dashboard's HTTP API, then Stop. For each command and robot: the time from the
request to the robot applying it (the robot's CommandApplied timestamp; one machine, one clock)
and to the learner hearing back. Baseline: the control period (a command is applied between two
ticks, so up to one period is inherent).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.soak import TOKEN, publish_policy
from harness.learner import LearnerProcess
from harness.processes import spawn_robot, stop_processes, wait_for

OPERATOR = "bench-operator-token-0123456789"
DASHBOARD_LINE = re.compile(r"operator dashboard on http://[^:/]+:(\d+)/")


def _api(base: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"Bearer {OPERATOR}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench stop-latency")
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fleet-stop-") as tmp:
        root = Path(tmp)
        data = root / "learner"
        data.mkdir()
        (root / "tokens").write_text(TOKEN + "\n")
        (root / "operators").write_text(f"bench {OPERATOR}\n")
        publish_policy(data)
        learner = LearnerProcess(data, root / "tokens", root / "learner.log", dashboard_port=0,
                                 extra=["--no-train", "--operator-token-file", str(root / "operators")])
        robots: list[subprocess.Popen] = []
        try:
            learner.start()
            # The dashboard was asked for any free port: the learner's log says which.
            found = wait_for(lambda: DASHBOARD_LINE.search(learner.log_path.read_text()), 60, "the operator dashboard")
            base = f"http://127.0.0.1:{found.group(1)}"
            robots = [spawn_robot(learner.address, f"arm-{i}", "push_cube", root / "tokens", root / f"arm-{i}",
                                  root / f"arm-{i}.log", ["--help-gate", "off", "--preview-hz", "0"])
                      for i in range(args.robots)]
            deadline = time.time() + 120
            while sum(r.get("mode") == "autonomous" for r in _api(base, "/api/state")["robots"]) < args.robots:
                if time.time() > deadline:
                    raise RuntimeError("the robots did not start running the policy")
                time.sleep(0.5)
            print(f"stop-latency: {args.robots} robots at 10 Hz; {args.rounds} rounds of Pause and Resume, then Stop",
                  flush=True)
            records: dict[str, dict] = {}
            for _ in range(args.rounds):
                for action in ("pause", "resume"):
                    _api(base, f"/api/robots/all/{action}", "POST")
                    time.sleep(1.0)
                    records.update({c["command_id"]: c for c in _api(base, "/api/state")["commands"]})
            _api(base, "/api/robots/all/stop", "POST")
            time.sleep(1.5)
            records.update({c["command_id"]: c for c in _api(base, "/api/state")["commands"]})
        finally:
            stop_processes(robots, 60, kill=False)
            learner.stop(30, kill=False)
    by_action: dict[str, list[tuple[float, float]]] = {}
    for c in records.values():
        if c["action"] in ("pause", "resume", "stop") and c.get("effective_at"):
            by_action.setdefault(c["action"], []).append(((c["effective_at"] - c["issued_at"]) * 1000,
                                                          (c["applied_at"] - c["issued_at"]) * 1000))
    figures: dict = {"robots": args.robots, "rounds": args.rounds, "control_period_ms": 100.0}
    for action, values in sorted(by_action.items()):
        effect = np.array([v[0] for v in values])
        round_trip = np.array([v[1] for v in values])
        figures[f"{action}_effect_ms"] = {"p50": round(float(np.percentile(effect, 50)), 1),
                                          "p99": round(float(np.percentile(effect, 99)), 1),
                                          "max": round(float(effect.max()), 1), "n": len(effect)}
        figures[f"{action}_round_trip_ms_p99"] = round(float(np.percentile(round_trip, 99)), 1)
        print(f"  {action:6s}: applied p50 {figures[f'{action}_effect_ms']['p50']} ms, p99 "
              f"{figures[f'{action}_effect_ms']['p99']} ms, max {figures[f'{action}_effect_ms']['max']} ms "
              f"({len(effect)} commands); ratio of p99 to the 100 ms control period "
              f"{figures[f'{action}_effect_ms']['p99'] / 100:.2f}", flush=True)
    return figures
