"""`fleet robot --sim` over the real command line: a task list on the real-proxy variant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import wait_for

REPO = Path(__file__).resolve().parents[1]


def test_fleet_robot_runs_a_task_list_on_real_proxy(learner_process, token_file, tmp_path):
    from learner.store import StoreReader

    learner = learner_process(["--no-train"]).start()
    command = [sys.executable, "-m", "fleetlearn.cli", "robot", "--sim", "reach,press_button",
               "--variant", "real-proxy", "--learner", learner.address, "--token-file", str(token_file),
               "--robot-id", "proxy-arm", "--work-dir", str(tmp_path / "robot"), "--fast",
               "--demos", "2", "--max-episodes", "2", "--insecure"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    def stored():
        reader = StoreReader(tmp_path / "learner")
        rows = [dict(row) for row in reader.complete_episodes()]
        reader.close()
        return rows if len(rows) == 2 else None

    rows = wait_for(stored, 30, "both demonstrations in the learner's store")
    assert sorted(row["task"] for row in rows) == ["press_button", "reach"]
    assert all(row["kind"] == "demonstration" and row["success"] for row in rows)

    # The robot ran the real-proxy world: its first stored frame is real-proxy's for that seed
    # (the sensor noise is seeded by the episode seed), not sim's.
    import sim

    reader = StoreReader(tmp_path / "learner")
    row = rows[0]
    first_frame = reader.load_episode(reader.db.execute(
        "SELECT * FROM episodes WHERE episode_id=?", (row["episode_id"],)).fetchone()).arrays["image/front"][0]
    reader.close()
    frames = {}
    for variant in sim.VARIANTS:
        env = sim.make(row["task"], variant=variant)
        frames[variant] = env.reset(seed=row["seed"])[0]["images"]["front"]
        env.close()
    assert (first_frame == frames["real-proxy"]).all()
    assert not (first_frame == frames["sim"]).all()


def test_unknown_variant_is_a_message(token_file, tmp_path):
    command = [sys.executable, "-m", "fleetlearn.cli", "robot", "--sim", "reach", "--variant", "reality",
               "--learner", "127.0.0.1:1", "--token-file", str(token_file), "--work-dir", str(tmp_path), "--insecure"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "reality" in result.stderr and "Traceback" not in result.stderr
