"""The scaling benchmark's arithmetic (bench/scaling.py): medians over seeds, speed-up against one
robot, robot-hours, runs that never reached the target, and the comparison parts."""

from __future__ import annotations

import argparse

import pytest

from bench.fleet_watch import CpuMeter
from bench.scaling import summarise


def _run(part, robots, seed, time_s, reached=True, algorithm="hg_dagger", sampler="offline_online_mix",
         tasks=("reach",), best=0.6):
    return {"part": part, "robots": robots, "seed": seed, "algorithm": algorithm, "sampler": sampler,
            "tasks": list(tasks), "reached": reached, "time_to_target_s": time_s,
            "robot_hours_to_target": robots * time_s / 3600, "human_steps_to_target": 100 * robots,
            "curve": [(0.0, 0, 0.1), (time_s, 3, best)], "best_success": best, "last_success": best,
            "trainer_updates_per_s": 8.0, "cores": {"robots": 0.1 * robots, "learner": 0.1, "trainer": 0.8,
                                                    "evaluator": 0.2}}


def test_speedup_is_the_ratio_of_median_times_and_censored_runs_count_at_their_cap():
    args = argparse.Namespace(target=0.3, tasks="reach", updates_per_s=8.0, publish_every_s=30.0, cap_minutes=7.0,
                              eval_seeds=20, demos=12, compare_robots=2)
    runs = [_run("scaling", 1, 0, 420.0, reached=False), _run("scaling", 1, 1, 300.0), _run("scaling", 1, 2, 360.0),
            _run("scaling", 4, 0, 90.0), _run("scaling", 4, 1, 150.0), _run("scaling", 4, 2, 120.0),
            _run("scaling", 2, 0, 200.0),
            _run("algorithms", 2, 0, 420.0, reached=False, algorithm="recap", best=0.2),
            _run("samplers", 4, 0, 240.0, sampler="adaptive", tasks=("reach", "push_cube")),
            _run("samplers", 4, 0, 300.0, tasks=("reach", "push_cube"))]
    figures = summarise(runs, args)
    assert figures["time_to_target_s"] == {"1": 360.0, "2": 200.0, "4": 120.0}
    assert figures["speedup"] == {"1": 1.0, "2": 1.8, "4": 3.0}
    assert figures["robot_hours_to_target"]["4"] == pytest.approx(4 * 120 / 3600)
    assert figures["reached"] == {"1": "2/3", "2": "1/1", "4": "3/3"}
    assert figures["where_time_goes"]["4"]["robots"] == pytest.approx(0.4)
    # HG-DAgger's arm of the comparison is the scaling run at the comparison's fleet size.
    assert figures["algorithms"]["hg_dagger"]["time_to_target_s"] == 200.0
    assert figures["algorithms"]["recap"] == {"time_to_target_s": 420.0, "reached": "0/1", "best_success": 0.2,
                                              "last_success": 0.2, "human_steps_to_target": 200.0,
                                              "per_seed": {"0": 420.0}}
    assert figures["samplers"]["adaptive"]["time_to_target_s"] == 240.0
    assert figures["samplers"]["offline_online_mix"]["time_to_target_s"] == 300.0


def test_cpu_meter_keeps_the_last_reading_of_processes_that_are_gone():
    import os

    meter = CpuMeter()
    sum(i * i for i in range(300_000))  # some CPU time in this process
    meter.sample("me", [os.getpid()])
    first = meter.total("me")
    assert first > 0
    meter.sample("me", [os.getpid(), 999_999_999])  # a pid that does not exist reads as nothing
    assert meter.total("me") >= first
