"""Fleet metrics per policy version, read from the episode store.

    success_rate               evaluation episodes (fixed seeds, no operator) that succeeded
    interventions_per_episode  takeovers per training episode
    human_steps                operator-driven steps over the version's training episodes
    ROHE                       (M/N) * mean over training episodes of reward / (1 + human steps)
                               (Fleet-DAgger's return on human effort; reward = 1 per success)
    task_success               {task: evaluation success rate} when the fleet runs several tasks
"""

from __future__ import annotations

from learner.store import StoreReader


def version_table(reader: StoreReader, robots: int, operators: int, eval_seeds: int = 0) -> list[dict]:
    """One row per policy version that ran. A version is `eval_complete` once it has run at least
    `eval_seeds` evaluation episodes in all (robots skip a version superseded before they reach it)."""
    table = []
    for r in reader.version_summaries():
        episodes, evals = r["episodes"] or 0, r["eval_episodes"] or 0
        table.append({
            "version": r["version"],
            "episodes": episodes,
            "eval_episodes": evals,
            "eval_complete": evals >= eval_seeds,
            "success_rate": (r["eval_successes"] / evals) if evals else None,
            "train_success_rate": (r["train_successes"] / episodes) if episodes else None,
            "interventions_per_episode": (r["takeovers"] / episodes) if episodes else None,
            "human_steps": r["human_steps"] or 0,
            "rohe": (operators / robots) * (r["rohe_sum"] / episodes) if episodes and robots else None,
            "task_success": {},
            "task_eval_episodes": {},
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
    lines = [f"{'version':>7} {'eval success':>12} {'eval eps':>8} {'train eps':>9} {'takeovers/ep':>12} "
             f"{'human steps':>11} {'ROHE':>7}" + "".join(f" {t:>{width}}" for t in per_task)]
    for r in table:
        partial = "" if r["eval_complete"] else " (evaluation incomplete)"
        lines.append(f"{r['version']:>7} {f(r['success_rate'], '12.0%')} {r['eval_episodes']:>8} {r['episodes']:>9} "
                     f"{f(r['interventions_per_episode'], '12.2f')} {r['human_steps']:>11} {f(r['rohe'], '7.3f')}"
                     + "".join(f" {f(r['task_success'].get(t), f'{width}.0%')}" for t in per_task) + partial)
    return "\n".join(lines)
