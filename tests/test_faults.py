"""Fault injection (`pytest -m faults`; part of the default run): a fleet of MuJoCo robots at
10 Hz streams through a proxy to a `fleet learner` process while a randomized schedule of at
least 20 faults hits it:

    kill_learner   kill -9 of the learner, started again on the same port
    cut            the network between robots and learner drops every connection, refuses new ones
    delay          every byte delayed 50-300 ms for a few seconds
    corrupt_spool  a robot restarts with a corrupt file in its spool
    disk_full      the robot's spool disk (a tmpfs) fills up, then frees (needs mount rights)
    bad_weights    a version whose weights do not match their announced hash (tampered) or are
                   cut short (truncated) is published, then a good one

Invariants checked after the schedule: every step each robot spooled is stored exactly once
(every complete episode holds steps 0..n-1, nothing left incomplete or in a spool), no robot ran
a version whose weights failed verification, and the control loops kept their rate. The seed
is printed; FLEET_FAULT_SEED=N replays a schedule.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for
from learner.store import StoreReader
from proxy import FaultProxy
from test_fleet_e2e import RobotThread, publish_small_policy as publish

pytestmark = pytest.mark.faults
ROBOTS = 3


def try_tmpfs(path: Path, size_mb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                            capture_output=True)
    return result.returncode == 0


class Fleet:
    def __init__(self, tmp_path: Path, address: str):
        self.root, self.address = tmp_path / "robots", address
        self.robots: dict[str, RobotThread] = {}
        self.spooled = {f"arm-{i}": 0 for i in range(ROBOTS)}
        self.lives: list[dict] = []

    def start(self, robot_id: str) -> None:
        self.robots[robot_id] = RobotThread(self.root, self.address, robot_id, max_steps=30, help_gate="off",
                                            realtime=True, preview_hz=2, seed=len(self.lives)).start()

    def stop(self, robot_id: str) -> None:
        self.robots.pop(robot_id).stop()
        stats = json.loads((self.root / robot_id / "stats.json").read_text())
        self.spooled[robot_id] += stats["steps_spooled"]
        self.lives.append({"robot": robot_id, **stats})


def test_randomized_faults_lose_and_duplicate_nothing(learner_process, tmp_path):
    seed = int(os.environ.get("FLEET_FAULT_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"\nfault injection: seed {seed} (FLEET_FAULT_SEED={seed} replays this schedule)")
    learner = learner_process(["--no-train"]).start()
    data = learner.args[learner.args.index("--data") + 1]
    data = Path(data)
    publish(data, 0)
    proxy = FaultProxy(learner.port)
    fleet = Fleet(tmp_path, proxy.address)
    spool_disk = tmp_path / "robots" / "arm-0" / "spool"
    can_fill = try_tmpfs(spool_disk, 16)
    kinds = ["kill_learner", "cut", "delay", "corrupt_spool", "bad_weights"] + (["disk_full"] if can_fill else [])
    if not can_fill:
        print("fault injection: disk_full skipped (cannot mount a tmpfs here: needs root)")
    version, bad_versions, injected, rejected = 0, set(), [], []
    try:
        for i in range(ROBOTS):
            fleet.start(f"arm-{i}")
        wait_for(lambda: all(r.client.version == 0 for r in fleet.robots.values()), 60, "robots on version 0")
        schedule = kinds + [rng.choice(kinds) for _ in range(20 - len(kinds))]  # every kind, 20 in all
        rng.shuffle(schedule)
        for number, kind in enumerate(schedule, 1):
            time.sleep(rng.uniform(0.5, 2.0))
            if kind == "kill_learner":
                down = rng.uniform(0.3, 2.0)
                learner.kill()
                time.sleep(down)
                learner.start()
                detail = f"kill -9, down {down:.1f} s"
            elif kind == "cut":
                seconds = rng.uniform(1.0, 3.0)
                proxy.cut(seconds)
                time.sleep(seconds)
                detail = f"all connections dropped, refused for {seconds:.1f} s"
            elif kind == "delay":
                proxy.delay_s, seconds = rng.uniform(0.05, 0.3), rng.uniform(2.0, 4.0)
                detail = f"{proxy.delay_s * 1000:.0f} ms per read for {seconds:.1f} s"
                time.sleep(seconds)
                proxy.delay_s = 0.0
            elif kind == "corrupt_spool":
                robot_id = rng.choice(sorted(fleet.robots))
                fleet.stop(robot_id)
                garbage = tmp_path / "robots" / robot_id / "spool" / f"{robot_id}-garbage{number}__000000.chunk"
                garbage.write_bytes(rng.randbytes(rng.randint(1, 4000)))
                fleet.start(robot_id)
                detail = f"{robot_id} restarted with {garbage.stat().st_size if garbage.exists() else '?'} random bytes " \
                         f"as {garbage.name}"
            elif kind == "disk_full":
                usage = shutil.disk_usage(spool_disk)
                filler = spool_disk / "filler"
                with open(filler, "wb") as f:
                    try:
                        f.write(b"\0" * usage.free)
                    except OSError:
                        pass
                seconds = rng.uniform(1.0, 3.0)
                time.sleep(seconds)
                filler.unlink()
                detail = f"arm-0's spool disk full for {seconds:.1f} s"
            else:
                damage = rng.choice(["tampered", "truncated"])
                version += 1
                publish(data, version, damage=damage)
                bad_versions.add(version)
                time.sleep(2.0)
                version += 1
                publish(data, version)
                detail = f"version {version - 1} {damage}, then version {version} good"
            injected.append((kind, detail))
            print(f"  fault {number:2d}: {kind:13s} {detail}", flush=True)
        time.sleep(3.0)
        for robot_id in sorted(fleet.robots):
            fleet.stop(robot_id)
    finally:
        for robot_id in sorted(fleet.robots):
            fleet.stop(robot_id)
        proxy.close()
        rejected = [p.name for r in fleet.spooled  # read before the tmpfs goes
                    for p in (tmp_path / "robots" / r / "spool" / "rejected").glob("*garbage*.chunk")]
        if can_fill:
            subprocess.run(["umount", "-l", str(spool_disk)], capture_output=True)
    assert len(injected) >= 20

    reader = StoreReader(data)
    for robot_id, spooled in fleet.spooled.items():
        stored = reader.db.execute("SELECT COALESCE(SUM(num_steps), 0) FROM chunks WHERE robot_id=?",
                                   (robot_id,)).fetchone()[0]
        assert stored == spooled, f"{robot_id}: {spooled} steps spooled, {stored} stored"
        incomplete = reader.db.execute("SELECT COUNT(*) FROM episodes WHERE robot_id=? AND complete=0",
                                       (robot_id,)).fetchone()[0]
        assert incomplete == 0, f"{robot_id}: {incomplete} episodes incomplete"
        assert not list((tmp_path / "robots" / robot_id / "spool").glob("*.chunk")), f"{robot_id}: chunks left unsent"
    for row in reader.complete_episodes():
        steps = reader.load_episode(row).arrays["step_index"]
        assert np.array_equal(steps, np.arange(row["num_steps"])), row["episode_id"]
    ran = {r[0] for r in reader.db.execute("SELECT DISTINCT policy_version FROM episodes")}
    assert not ran & bad_versions, f"episodes ran on unverified versions {ran & bad_versions}"
    reader.close()
    assert len(rejected) == sum(kind == "corrupt_spool" for kind, _ in injected)
    ticks = sum(life["ticks"] for life in fleet.lives)
    missed = sum(life["missed_ticks"] for life in fleet.lives)
    print(f"fault injection: {len(injected)} faults; {sum(fleet.spooled.values())} steps spooled and stored once; "
          f"{len(rejected)} corrupt spool files quarantined; versions {sorted(bad_versions)} refused; "
          f"{missed}/{ticks} control ticks overran their period")
    assert missed <= 0.05 * ticks, f"control loops missed {missed} of {ticks} ticks"


def trainers(pid: int) -> set[int]:
    """The learner's spawned trainer processes (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = set()
    for child in (path.read_text().split() if path.exists() else ()):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
        except OSError:
            pass
    return found


def test_a_killed_trainer_is_started_again(learner_process):
    learner = learner_process(["--min-demos", "1000"]).start()  # the trainer waits for demonstrations
    trainer = wait_for(lambda: trainers(learner.proc.pid), 30, "the trainer process")
    os.kill(next(iter(trainer)), 9)
    print(f"\nfault injection: kill -9 of the trainer (pid {next(iter(trainer))})")
    wait_for(lambda: b"the trainer exited" in learner.log_path.read_bytes(), 30, "the learner to notice")
    wait_for(lambda: trainers(learner.proc.pid) - trainer, 30, "a new trainer process")
    assert learner.proc.poll() is None
