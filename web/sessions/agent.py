"""A short, human label for a User-Agent string ("Firefox on Linux"), kept as a two-letter code.

Sessions store the code, not the label: every session pays for its bytes in Redis memory.
"""

from __future__ import annotations

import re

# Order matters: Edge and Opera also say Chrome, Chrome also says Safari, Android also says Linux.
_BROWSERS = [
    ("Edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Headless Chrome", re.compile(r"HeadlessChrome/")),
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
UNKNOWN = "-"


def browser_code(user_agent: str) -> str:
    """Two characters: which browser, which system ("-" for unknown)."""
    browser = next((str(i) for i, (_, p) in enumerate(_BROWSERS) if p.search(user_agent)), UNKNOWN)
    system = next((str(i) for i, (_, p) in enumerate(_SYSTEMS) if p.search(user_agent)), UNKNOWN)
    return browser + system


def label(code: str) -> str:
    """The label of a stored code; anything else (a label stored by an older version) as it is."""
    if len(code) != 2 or not all(c.isdigit() or c == UNKNOWN for c in code):
        return code
    browser = _BROWSERS[int(code[0])][0] if code[0].isdigit() and int(code[0]) < len(_BROWSERS) else None
    system = _SYSTEMS[int(code[1])][0] if code[1].isdigit() and int(code[1]) < len(_SYSTEMS) else None
    name = browser or "Unknown browser"
    return f"{name} on {system}" if system else name


def browser_label(user_agent: str) -> str:
    return label(browser_code(user_agent))
