"""`fleet bench float`'s fleet-side figures: the control loop's missed ticks with FLOAT off and
on (real-time robot loops, one process each), and the same fleet run twice, help asked by the
fixed rule and by FLOAT (bench/float.py's docstring lists the figures)."""

from __future__ import annotations

import multiprocessing
import tempfile
from pathlib import Path

import numpy as np


def _loop_rate_worker(job) -> dict:
    """One real-time robot loop (RobotClient, the sim, the policy) running `episodes` training
    episodes with FLOAT watching (tau infinite, so it scores every chunk but never stops the
    robot) or not; returns its tick counts. No learner: the chunks just queue up in memory."""
    import torch

    from policy import load_checkpoint
    from robot_client.driver import SimDriver
    from robot_client.loop import RobotClient, RobotConfig
    from robot_client.teleop import ScriptedOperator

    checkpoint_dir, task, gate, episodes, seed, work_dir = job
    torch.set_num_threads(1)
    driver = SimDriver([task])
    config = RobotConfig(robot_id=f"rate-{seed}", tasks=(task,), learner="127.0.0.1:1", token="-",
                         work_dir=Path(work_dir), help_gate=gate, seed=seed)
    client = RobotClient(config, driver, ScriptedOperator(driver))
    client.checkpoint = load_checkpoint(Path(checkpoint_dir))
    client.monitor.load(client.checkpoint)
    client.monitor.indices = {}  # no calibration: tau = inf, FLOAT computes but never asks
    for i in range(episodes):
        client.run_episode("training", 10_000 * seed + i, task)
    client.monitor.close()
    worker = client.monitor.worker
    return dict(ticks=client.ticks, missed=client.missed_ticks, scored=worker.processed if worker else 0,
                dropped=worker.dropped if worker else 0)


def _loop_rate(args, policy_dir: Path, bank, tasks: list[str]) -> dict:
    """Missed control ticks of `--rate-robots` real-time robot loops at once (one process each),
    FLOAT off then on, same seeds and episodes."""
    from policy import load_checkpoint, save_checkpoint

    context = multiprocessing.get_context("spawn")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "monitored", load_checkpoint(policy_dir).policy, version=0,
                                     artifacts={"float_bank": bank.as_arrays()})
        for arm, gate in (("float_off", "off"), ("float_on", "float")):
            jobs = [(str(checkpoint), tasks[i % len(tasks)], gate, args.rate_episodes, i + 1, f"{tmp}/{arm}-{i}")
                    for i in range(args.rate_robots)]
            with context.Pool(args.rate_robots) as pool:
                results = pool.map(_loop_rate_worker, jobs)
            ticks, missed = sum(r["ticks"] for r in results), sum(r["missed"] for r in results)
            out[arm] = {"ticks": ticks, "missed_ticks": missed, "missed_tick_rate": round(missed / ticks, 5),
                        "float_chunks_scored": sum(r["scored"] for r in results),
                        "float_chunks_dropped": sum(r["dropped"] for r in results)}
            print(f"control loop, {args.rate_robots} robots in real time, FLOAT {arm[6:]}: {missed} of {ticks} "
                  f"ticks missed ({100 * missed / ticks:.2f}%)", flush=True)
    out["missed_tick_points"] = round(100 * (out["float_on"]["missed_tick_rate"] - out["float_off"]["missed_tick_rate"]), 2)
    return out


def _fleet_totals(summary: dict) -> dict:
    """Success of the final evaluated version, human time-steps and ROHE over every training episode."""
    rows = summary["versions"]
    episodes = sum(r["episodes"] for r in rows)
    rohe = sum((r["rohe"] or 0.0) * r["episodes"] for r in rows) / episodes if episodes else None
    final, first = summary["final_version"], summary["first_version"]
    return {"success_rate": round(final["success_rate"], 3) if final else None,
            "first_version_success": round(first["success_rate"], 3) if first else None,
            "final_version": final["version"] if final else None,
            "human_steps": sum(r["human_steps"] for r in rows),
            "rohe": round(rohe, 4) if rohe is not None else None,
            "training_episodes": episodes,
            "takeovers_per_episode": round(sum((r["interventions_per_episode"] or 0) * r["episodes"] for r in rows)
                                           / episodes, 3) if episodes else None,
            "missed_tick_rate": summary["robot_loops"].get("missed_tick_rate"),
            "ticks": summary["robot_loops"].get("ticks"),
            "float_chunks_dropped": summary["robot_loops"].get("float_chunks_dropped")}


def _plot_fleet(root: Path, path: Path) -> None:
    """Evaluation success per version and human time-steps over the run, both arms."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (success, human) = plt.subplots(1, 2, figsize=(10, 4))
    for arm, colour in (("fixed_rule", "#999"), ("float", "#47a")):
        rows = json.loads((root / arm / "summary.json").read_text())["versions"]
        done = [r for r in rows if r["eval_complete"]]
        success.plot([r["version"] for r in done], [100 * r["success_rate"] for r in done], "o-", color=colour, label=arm)
        human.plot([r["version"] for r in rows], np.cumsum([r["human_steps"] for r in rows]), "s-", color=colour,
                   label=arm)
    success.set(xlabel="policy version", ylabel="evaluation success (%)", title="success on 30 fixed seeds", ylim=(0, 100))
    human.set(xlabel="policy version", ylabel="human time-steps (cumulative)", title="operator effort")
    for ax in (success, human):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


def _fleet_comparison(args) -> dict:
    """The same fleet (robots, operators, task, seeds, minutes) twice: help asked by the fixed
    rule of the fleet loop (FLOAT off), then by FLOAT (the robot holds until an operator answers)."""
    from harness.fleet import FleetConfig, run_fleet

    root = Path(args.fleet_out or tempfile.mkdtemp(prefix="fleet-float-"))
    fleet = {}
    for arm, gate in (("fixed_rule", "rule"), ("float", "float")):
        print(f"fleet run {arm}: {args.fleet_robots} robots, {args.fleet_operators} operators, {args.fleet_task}, "
              f"{args.fleet_minutes:g} minutes", flush=True)
        summary = run_fleet(FleetConfig(minutes=args.fleet_minutes, robots=args.fleet_robots,
                                        operators=args.fleet_operators, out=root / arm, tasks=(args.fleet_task,),
                                        help_gate=gate))
        fleet[arm] = _fleet_totals(summary)
    _plot_fleet(root, Path(args.plot).with_name(Path(args.plot).stem + "_fleet.png"))
    rule, flt = fleet["fixed_rule"], fleet["float"]
    out = {"fleet": fleet, "fleet_task": args.fleet_task, "fleet_robots": args.fleet_robots,
           "fleet_operators": args.fleet_operators, "fleet_minutes": args.fleet_minutes}
    out["human_steps_ratio"] = round(rule["human_steps"] / flt["human_steps"], 2) if flt["human_steps"] else None
    out["missed_tick_rate"] = {"float_off": rule["missed_tick_rate"], "float_on": flt["missed_tick_rate"]}
    print(f"fleet: final success fixed rule {rule['success_rate']} vs FLOAT {flt['success_rate']}; human steps "
          f"{rule['human_steps']} vs {flt['human_steps']} ({out['human_steps_ratio']}x fewer; acceptance 1.5x); "
          f"ROHE {rule['rohe']} vs {flt['rohe']}; missed ticks {rule['missed_tick_rate']} vs {flt['missed_tick_rate']}")
    return out
