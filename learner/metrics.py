"""Fleet metrics per policy version, read from the episode store.

    success_rate               evaluation episodes (fixed seeds, no operator) that succeeded
    interventions_per_episode  takeovers per training episode
    human_steps                operator-driven steps over the version's training episodes
    ROHE                       (M/N) * mean over training episodes of reward / (1 + human steps)
                               (Fleet-DAgger's return on human effort; reward = 1 per success)
    success_ci                 95% Wilson interval of success_rate over its evaluation episodes
    task_success               {task: evaluation success rate} when the fleet runs several tasks
    updates_per_s, weight_age_s   from the version's record: the trainer's update rate when it was
                               published, and the age of the averaged weights robots run (the
                               moving average's lag in seconds at that rate)
"""

from __future__ import annotations

import math

from learner.store import StoreReader


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a success rate (sound at 0%, 100% and small n)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def version_table(reader: StoreReader, robots: int, operators: int, eval_seeds: int = 0,
                  versions: list[dict] | None = None, unrun: bool = False) -> list[dict]:
    """One row per policy version that ran. A version is `eval_complete` once it has run at least
    `eval_seeds` evaluation episodes in all (robots skip a version superseded before they reach it).
    `versions`: the version registry's records (`registry.versions()`), for the trainer's figures;
    `unrun`: also a row, with no episodes, for each of those records that no robot has run yet."""
    records = {v["version"]: v.get("info") or {} for v in versions or []}
    summaries = {r["version"]: dict(r) for r in reader.version_summaries()}
    if unrun:
        for version in records.keys() - summaries.keys():
            summaries[version] = {"version": version}
    table = []
    for version in sorted(summaries):
        r = summaries[version]
        episodes, evals = r.get("episodes") or 0, r.get("eval_episodes") or 0
        table.append({
            "version": version,
            "episodes": episodes,
            "eval_episodes": evals,
            "eval_complete": evals >= eval_seeds,
            "success_rate": (r["eval_successes"] / evals) if evals else None,
            "success_ci": wilson_interval(r.get("eval_successes") or 0, evals),
            "train_success_rate": (r["train_successes"] / episodes) if episodes else None,
            "interventions_per_episode": (r["takeovers"] / episodes) if episodes else None,
            "human_steps": r.get("human_steps") or 0,
            "rohe": (operators / robots) * (r["rohe_sum"] / episodes) if episodes and robots else None,
            "task_success": {},
            "task_eval_episodes": {},
            "updates_per_s": records.get(version, {}).get("updates_per_s"),
            "weight_age_s": records.get(version, {}).get("ema_lag_s"),
        })
    by_version = {row["version"]: row for row in table}
    for r in reader.task_summaries("evaluation"):
        by_version[r["version"]]["task_success"][r["task"]] = r["successes"] / r["episodes"]
        by_version[r["version"]]["task_eval_episodes"][r["task"]] = r["episodes"]
    return table


def format_table(table: list[dict]) -> str:
    def f(value, spec):
        return "-" if value is None else format(value, spec)

    tasks = sorted({task for r in table for task in r["task_success"]})
    per_task = tasks if len(tasks) > 1 else []
    width = max([12] + [len(t) for t in per_task])
    def interval(r):
        ci = r.get("success_ci")
        return "-" if ci is None else f"{100 * ci[0]:.0f}-{100 * ci[1]:.0f}%"

    lines = [f"{'version':>7} {'eval success':>12} {'95% CI':>8} {'eval eps':>8} {'train eps':>9} {'takeovers/ep':>12} "
             f"{'human steps':>11} {'ROHE':>7} {'updates/s':>9} {'weights age':>11}"
             + "".join(f" {t:>{width}}" for t in per_task)]
    for r in table:
        partial = "" if r["eval_complete"] else " (evaluation incomplete)"
        if r.get("canary") == "rolled back":
            partial = " (rolled back by the canary)"
        age = r.get("weight_age_s")
        lines.append(f"{r['version']:>7} {f(r['success_rate'], '12.0%')} {interval(r):>8} {r['eval_episodes']:>8} "
                     f"{r['episodes']:>9} {f(r['interventions_per_episode'], '12.2f')} {r['human_steps']:>11} "
                     f"{f(r['rohe'], '7.3f')} {f(r.get('updates_per_s'), '9.1f')} "
                     f"{'-' if age is None else f'{age:.0f} s':>11}"
                     + "".join(f" {f(r['task_success'].get(t), f'{width}.0%')}" for t in per_task) + partial)
    return "\n".join(lines)
