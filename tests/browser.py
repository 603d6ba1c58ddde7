"""A real browser for the dashboard tests: Debian's Chromium driven by Playwright.

Playwright's own browser download is not used: `scripts/setup` installs Debian's
`chromium` and the dev extra installs Playwright, which drives that executable. Each
browser gets a fresh profile folder, and flags that keep it from reaching anything but
the pages it is sent to (no sync, no component or background updates, no QUIC).

    with open_chromium(tmp_path / "profile") as context:
        page = context.new_page()
        page.goto(url)

`require_chromium()` skips the calling test, saying what to install, when the browser or
Playwright is missing; nothing else makes these tests skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (package `chromium`)."""

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""What the browser starts with: headless, as root, and quiet on the network."""

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
"""Viewports for screenshots: a laptop screen and a phone held upright."""


def chromium_missing() -> str:
    """Why the browser cannot run here (what to install), or "" when it can."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is not installed (scripts/setup installs Debian's chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (scripts/setup installs the dev extra)"
    return ""


def require_chromium() -> None:
    """Skip the calling test, with the reason, when the browser or Playwright is missing."""
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)


@contextlib.contextmanager
def open_chromium(
    profile: Path,
    *,
    viewport: ViewportSize | None = None,
    ignore_https_errors: bool = False,
    timeout_s: float = 30.0,
) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile in `profile` (made here); the
    browser context to open pages in. `timeout_s` is the default bound of every wait and
    action on its pages. Everything is closed on the way out."""
    from playwright.sync_api import sync_playwright

    profile.mkdir(parents=True, exist_ok=False)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=list(FLAGS),
            viewport=viewport or DESKTOP,
            ignore_https_errors=ignore_https_errors,
            # No page may slow a test down by asking for the network in the background.
            service_workers="block",
        )
        try:
            context.set_default_timeout(timeout_s * 1000)
            yield context
        finally:
            context.close()
