"""Helpers for the dashboard, status and explain tests: a real `hpo dashboard` subprocess,
the sockets it listens on, and a real headless Chromium to look at it with."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import REPO, cli_env

if TYPE_CHECKING:
    from playwright.sync_api import Page

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCREENSHOTS = REPO / "bench" / "results" / "screenshots"  # for a human to look at
CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/test-services.sh installs it)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def dashboard(cwd: Path, *args: str) -> Iterator[tuple[int, subprocess.Popen]]:
    """Start ``hpo dashboard --port 0 ARGS`` in ``cwd``; yield (port, process) once it
    answers HTTP, and kill it afterwards whatever happened."""
    log = (cwd / "dashboard.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", "dashboard", "--port", "0", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # printed only after the socket is bound
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        assert match, f"no address in {line!r}; stderr: {(cwd / 'dashboard.err').read_text()}"
        port = int(match.group(1))
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "dashboard did not answer within 60 s"
                time.sleep(0.3)
        yield port, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


@contextmanager
def browser_page(profile: Path) -> Iterator[Page]:
    """A page of Debian's Chromium, headless, driven by Playwright; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket in LISTEN state on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found
