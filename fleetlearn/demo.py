"""`fleet demo`: the whole loop on one machine.

A learner (server + trainer + simulated operator pool) and N simulated robots, each in its own
process, talk gRPC over loopback exactly as they would across machines. Timeline within the
`--minutes` budget:

  1. every robot records a share of the scripted demonstrations (`demos` per task; with several
     tasks every robot goes round the task list, and one policy learns them all, conditioned on
     each task's instruction);
  2. the trainer trains version 0 on them to convergence and publishes it;
  3. robots run the policy; a rollout that goes wrong asks for help, a free simulated operator
     takes over for a segment, and those intervention steps are what HG-DAgger learns from;
     new versions arrive every minute or so and robots swap between episodes;
  4. publishing stops early enough that the final version finishes its evaluation share.

Progress is a live table per policy version; at the end DIR/summary.json and
DIR/learning_curve.png are written. The operator dashboard runs all along (its URL, with the
demo's operator token, is printed first): watch the robots, answer help requests before the
simulated operators do, take a robot over and drive it from the browser.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.fleet import FleetConfig, FleetRun, print_progress
from learner.metrics import format_table


# On 2 cores version 0 is published 4-5.5 minutes in (the demonstrations, then the encoder fine-tuned
# end to end), and every later version takes its publishing interval plus the canary's hold.
SHORTEST_LEARNING_MINUTES = 11.0  # an 8-minute run on an fp32 CPU showed version 0 alone (5.3 min in)


@dataclass
class DemoConfig(FleetConfig):
    screenshot: Path | None = None  # save a picture of the dashboard's fleet view here, `screenshot_at_min` in
    screenshot_at_min: float = 4.0


def run_demo(config: DemoConfig) -> dict:
    run = FleetRun(config)
    print(f"fleet demo: {config.robots} robots, {config.operators} simulated operators, tasks {','.join(config.tasks)}, "
          f"{config.minutes:g} minutes; logs in {run.logs}", flush=True)
    if config.minutes < SHORTEST_LEARNING_MINUTES:
        print(f"note: on 2 cores version 0 comes 4-5.5 minutes in and each later version about 2.5 minutes after "
              f"the one before; {config.minutes:g} minutes may show version 0 alone, or no version "
              f"(--minutes {SHORTEST_LEARNING_MINUTES:g} or more shows learning)", flush=True)
    url = run.dashboard_url
    if url:
        print(f"operator dashboard: {url}", flush=True)
    alarms = []
    if config.screenshot and url:
        alarms.append((config.screenshot_at_min * 60, lambda: save_screenshot(url, Path(config.screenshot))))
    summary = run.run(print_progress, alarms)
    out = Path(config.out)
    plot_learning_curve(summary["versions"], out / "learning_curve.png")
    print("\nfinal:\n" + format_table(summary["versions"]))
    if not summary["versions"]:
        print(f"no version was published in {config.minutes:g} minutes: version 0 was still training on the "
              "demonstrations (4-5.5 minutes on 2 cores); give the demo more --minutes")
    print(f"wrote {out / 'summary.json'} and {out / 'learning_curve.png'}")
    return summary


def save_screenshot(url: str, path: Path) -> None:
    """A picture of the dashboard's fleet view, taken in headless Chromium (if it is installed)."""
    from dashboard.browser import find_chromium, launch

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("no screenshot: playwright is not installed", flush=True)
        return
    if find_chromium() is None:
        print("no screenshot: chromium is not installed", flush=True)
        return
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url)
        page.wait_for_selector(".tile img[src]", timeout=30_000)
        time.sleep(3)  # a few live updates
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        browser.close()
    print(f"saved a screenshot of the dashboard to {path}", flush=True)


def plot_learning_curve(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r["success_rate"] is not None and r["eval_complete"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    tasks = sorted({task for r in rows for task in r["task_success"]})
    if len(tasks) > 1:
        for task in tasks:
            ax1.plot([r["version"] for r in rows], [100 * r["task_success"].get(task, 0.0) for r in rows],
                     ".--", alpha=0.7, label=task)
    versions = [r["version"] for r in rows]
    if rows and all(r.get("success_ci") for r in rows):
        ax1.fill_between(versions, [100 * r["success_ci"][0] for r in rows], [100 * r["success_ci"][1] for r in rows],
                         color="black", alpha=0.12, label="95% interval")
    ax1.plot(versions, [100 * r["success_rate"] for r in rows], "o-", color="black", label="all tasks")
    held_back = [r for r in table if r.get("canary") == "rolled back" and r["success_rate"] is not None]
    if held_back:
        ax1.plot([r["version"] for r in held_back], [100 * r["success_rate"] for r in held_back], "x", color="tab:red",
                 label="rolled back by the canary (its robots' seeds)")
    if rows:
        ax1.axhline(100 * rows[0]["success_rate"], color="tab:blue", ls=":", label=f"version {rows[0]['version']} level")
    ax1.legend(fontsize=7, loc="upper left")
    ax1.set(xlabel="policy version", ylabel="evaluation success (%)", title="Success on fixed evaluation seeds",
            ylim=(0, 100))
    ax1.grid(alpha=0.3)
    rows = [r for r in table if r["interventions_per_episode"] is not None]
    ax2.plot([r["version"] for r in rows], [r["interventions_per_episode"] for r in rows], "s-", color="tab:red")
    ax2.set(xlabel="policy version", ylabel="takeovers per training episode", title="Human interventions")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
