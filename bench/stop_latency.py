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
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.soak import TOKEN, _fleet, publish_policy

OPERATOR = "bench-operator-token-0123456789"


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
        port_file, dashboard_port = root / "port", None
        learner = _fleet(["learner", "--data", str(data), "--host", "127.0.0.1", "--port", "0", "--port-file",
                          str(port_file), "--token-file", str(root / "tokens"), "--no-train", "--dashboard-port", "0",
                          "--operator-token-file", str(root / "operators"), "--insecure"], root / "learner.log")
        robots: list[subprocess.Popen] = []
        try:
            deadline = time.time() + 60
            while dashboard_port is None:
                text = (root / "learner.log").read_text() if (root / "learner.log").exists() else ""
                if "operator dashboard on http://" in text:
                    dashboard_port = int(text.split("operator dashboard on http://")[1].split("/")[0].split(":")[1])
                elif learner.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the learner did not start: {text[-2000:]}")
                time.sleep(0.2)
            address = f"127.0.0.1:{port_file.read_text().strip()}"
            base = f"http://127.0.0.1:{dashboard_port}"
            robots = [_fleet(["robot", "--sim", "push_cube", "--learner", address, "--token-file", str(root / "tokens"),
                              "--robot-id", f"arm-{i}", "--work-dir", str(root / f"arm-{i}"), "--help-gate", "off",
                              "--preview-hz", "0", "--insecure"], root / f"arm-{i}.log") for i in range(args.robots)]
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
            for proc in robots:
                proc.terminate()
            for proc in robots:
                proc.wait(60)
            learner.terminate()
            learner.wait(30)
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
