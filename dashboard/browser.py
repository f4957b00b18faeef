"""Headless Chromium for the dashboard's screenshots, benchmark and tests: Debian's package,
driven by Playwright through `executable_path` (no browser download)."""

from __future__ import annotations

import shutil

# Headless as root on a machine without a GPU or outside network: no sandbox, no GPU process,
# and no background connections (refused here, many at a time, at every start).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """The installed Chromium (`make browser` installs Debian's), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright, executable: str | None = None):
    """A headless Chromium browser from a started `sync_playwright()`."""
    executable = executable or find_chromium()
    if executable is None:
        raise RuntimeError("no chromium on PATH (Debian: make browser, or apt-get install chromium)")
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
