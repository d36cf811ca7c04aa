"""Open an HTML report in headless Chromium and read back what the browser laid out.

Used by the report tests of every plugin: ``open_in_browser(path)`` loads the file, lets its
inline self-check count the charts that rendered with a real size (see core/reports.py),
and returns those counts plus a PNG screenshot for a person to look at.

Chromium comes from Debian (``apt-get install -y chromium``; PITFALLS.md). Without it the
browser tests skip, except where ``RAPPORT_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

REQUIRE_BROWSER = os.environ.get("RAPPORT_REQUIRE_BROWSER") == "1"
#: Flags every start needs here (PITFALLS: root, no GPU, a closed network).
_CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update",
                   "--disable-sync"]
_FLAGS = ["--headless", *_CHROMIUM_FLAGS, "--hide-scrollbars", "--virtual-time-budget=10000"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class BrowserView:
    figures_total: int
    figures_rendered: int
    title: str
    dom: str
    screenshot: Path


def _run(args: list[str], timeout: float = 90) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def require_chromium() -> str:
    """The Chromium binary; skip the test without one (fail under CI)."""
    binary = chromium_path()
    if binary is None:
        message = "Chromium is not installed (apt-get install -y chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(f"RAPPORT_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    return binary


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 for the block; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A Playwright page in Debian's Chromium (never Playwright's own download)."""
    binary = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=_CHROMIUM_FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def open_in_browser(path: Path, screenshot: Path | None = None) -> BrowserView:
    """Render ``path`` in headless Chromium; skip (or fail under CI) without a browser."""
    binary = require_chromium()
    url = path.resolve().as_uri()
    shot = screenshot or path.with_suffix(".png")
    with tempfile.TemporaryDirectory(prefix="rapport-chromium-") as profile:
        flags = [binary, *_FLAGS, f"--user-data-dir={profile}"]
        dom = _run([*flags, "--dump-dom", url])
    with tempfile.TemporaryDirectory(prefix="rapport-chromium-") as profile:
        flags = [binary, *_FLAGS, f"--user-data-dir={profile}"]
        _run([*flags, "--window-size=1280,3000", f"--screenshot={shot}", url])
    body = re.search(r"<body([^>]*)>", dom)
    if body is None:
        raise AssertionError("the browser returned no <body>")
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    return BrowserView(
        figures_total=int(attrs.get("data-figures-total", "-1")),
        figures_rendered=int(attrs.get("data-figures-rendered", "-1")),
        title=title.group(1) if title else "",
        dom=dom,
        screenshot=shot,
    )
