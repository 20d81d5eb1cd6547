"""A short, human label for a User-Agent string: "Firefox on Linux"."""

from __future__ import annotations

import re

# Order matters: Edge and Opera also say Chrome, Chrome also says Safari, Android also says Linux.
_BROWSERS = [
    ("Edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/|Chromium/")),
    ("Safari", re.compile(r"Safari/")),
    ("curl", re.compile(r"^curl/")),
    ("Python", re.compile(r"python-httpx|python-requests|aiohttp", re.I)),
]
_SYSTEMS = [
    ("iOS", re.compile(r"iPhone|iPad|iPod")),
    ("Android", re.compile(r"Android")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Linux", re.compile(r"Linux|X11")),
]


def browser_label(user_agent: str) -> str:
    browser = next((name for name, pattern in _BROWSERS if pattern.search(user_agent)), "Unknown browser")
    system = next((name for name, pattern in _SYSTEMS if pattern.search(user_agent)), None)
    if "HeadlessChrome" in user_agent:
        browser = "Headless Chrome"
    return f"{browser} on {system}" if system else browser
