"""Does the operator dashboard slow ingest? `fleet bench ingest`'s robots (each also holding a
control stream with a heartbeat a second and live pictures at 5 Hz, as real robots do) stream
into the learner, once without a dashboard (the baseline) and once with the dashboard serving a
page open in headless Chromium (server-sent events twice a second, every robot's picture
refetched as it changes). The arms alternate, three repeats each; the figures are medians.

The browser runs at the lowest CPU priority (nice 19). An operator's browser runs on the
operator's computer, not on the learner's; here both share two cores, and what is measured is
what the dashboard costs the learner (serving the page, its events and its pictures), not what
a browser costs a machine it should not run on. The page's own rates (snapshots and pictures
received per second) are reported, so a starved page would show.

Acceptance (issue 6): with the page open, at least 95% of the baseline's steps/s and a p99 ack
latency within 1.1x of the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

from bench.ingest import run_arm
from dashboard.browser import find_chromium, launch



@contextlib.contextmanager
def open_page(url: str, robots: int, counts: list):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        low_priority = os.path.join(tmp, "chromium-nice")
        with open(low_priority, "w") as f:
            f.write(f'#!/bin/sh\nexec nice -n 19 {find_chromium()} "$@"\n')
        os.chmod(low_priority, 0o755)
        browser = launch(p, executable=low_priority)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url)
        page.wait_for_function(f"document.querySelectorAll('.tile').length >= {robots}", timeout=30_000)
        before = page.evaluate("[fleetDashboard.renders, fleetDashboard.pictures]")
        started = time.time()
        try:
            yield page
        finally:
            after = page.evaluate("[fleetDashboard.renders, fleetDashboard.pictures]")
            elapsed = time.time() - started
            counts.append(((after[0] - before[0]) / elapsed, (after[1] - before[1]) / elapsed))
            browser.close()


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fleet bench dashboard")
    parser.add_argument("--robots", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preview-hz", type=float, default=5.0)
    args = parser.parse_args(argv)
    if find_chromium() is None:
        raise SystemExit("fleet bench dashboard needs chromium (Debian: apt-get install chromium) and playwright")
    runs = {"without": [], "with_page": []}
    counts: list = []
    for repeat in range(args.repeats):
        for arm in runs:
            print(f"dashboard bench: repeat {repeat + 1}/{args.repeats}, {arm.replace('_', ' ')} dashboard, "
                  f"{args.robots} robots x {args.seconds:g} s...", flush=True)
            watch = (lambda url, robots: open_page(url, robots, counts)) if arm == "with_page" else None
            figures = run_arm("learner", args.robots, args.seconds, args.inflight, 10, args.preview_hz, watch)
            runs[arm].append(figures)
            print(f"  {figures['steps_per_s']:.0f} steps/s, ack p99 {figures['ack_p99_ms']:.1f} ms", flush=True)

    def median(arm, key):
        return statistics.median(r[key] for r in runs[arm])

    out = {
        "robots": args.robots, "seconds": args.seconds, "repeats": args.repeats, "preview_hz": args.preview_hz,
        "steps_per_s_without": round(median("without", "steps_per_s"), 1),
        "steps_per_s_with_page": round(median("with_page", "steps_per_s"), 1),
        "ack_p99_ms_without": round(median("without", "ack_p99_ms"), 1),
        "ack_p99_ms_with_page": round(median("with_page", "ack_p99_ms"), 1),
        "page_snapshots_per_s": round(statistics.median(c[0] for c in counts), 2),
        "page_pictures_per_s": round(statistics.median(c[1] for c in counts), 1),
        "runs": runs,
    }
    out["steps_ratio"] = round(out["steps_per_s_with_page"] / out["steps_per_s_without"], 3)
    out["p99_ratio"] = round(out["ack_p99_ms_with_page"] / out["ack_p99_ms_without"], 3)
    print(f"with the page open: {out['steps_ratio']:.1%} of the steps/s (acceptance >= 95%), ack p99 "
          f"{out['p99_ratio']:.2f}x (acceptance <= 1.1x); the page got {out['page_snapshots_per_s']} snapshots/s "
          f"and {out['page_pictures_per_s']} pictures/s", flush=True)
    return out
