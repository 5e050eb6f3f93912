"""Debian's chromium, headless, driven by selenium through chromium-driver (browser tests).

Nothing is downloaded: the driver and browser paths are given explicitly and
Selenium Manager is switched off (SE_OFFLINE).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

needs_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (scripts/setup installs them)",
)


@contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    """A headless chromium WebDriver with ``extra_args``, quit on leaving."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        *extra_args,
    ):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()
