"""The eight measures that have targets, as a markdown table, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.redis_probe import SessionMemory
from bench.wrk import wrk_binary

# Targets for 2 cores with everything on one box.
MIN_PAGE_VS_CEILING = 0.6  # signed-in GET / req/s, as a share of the ceiling's (issue 14)
MIN_CEILING_VS_MINIMAL = 0.7  # the ceiling's req/s, as a share of a minimal page's of its size
MAX_ANON_CPU_VS_CEILING = 1.3  # anonymous GET /login's server CPU per request, the ceiling's = 1
MAX_LOADED_P99_RATIO = 3.0  # GET / p99 while others sign in, to the unloaded p99
MAX_FLOODED_SIGN_IN_RATIO = 3.0  # a sign-in's median time during a flood of taken-address sign-ups
MIN_LOGIN_SHARE = 0.80  # POST /login req/s, as a share of bcrypt checks/s on every core
MAX_ROUND_TRIPS = 1.0  # per signed-in page
MAX_SESSION_BYTES = 300  # Redis memory per session at one session per user

Run = dict[str, Any]  # one run's figures, keyed as in bench/__main__.py


@dataclass(frozen=True)
class Row:
    """A measure compared with another, within each run, against a target for the ratio."""

    measure: str
    sides: Callable[[Run], tuple[float, float]]  # (this, compared with), from one run
    spec: str  # format of each side
    unit: str
    at_least: float | None = None
    at_most: float | None = None
    percent: bool = False

    def ratio(self, value: float) -> str:
        return f"{value:.0%}" if self.percent else f"{value:.2f}x" if self.at_most else f"{value:.2f}"

    def line(self, n: int, runs: list[Run]) -> str:
        pairs = [self.sides(run) for run in runs]
        ratios = [a / b for a, b in pairs]
        ratio = statistics.median(ratios)
        this, other = (statistics.median(side) for side in zip(*pairs, strict=True))
        sides = f"{this:{self.spec}} vs {other:{self.spec}} {self.unit}"
        each = " / ".join(map(self.ratio, ratios))
        if self.at_most is not None:
            target, ok = f"<= {self.at_most:g}x", ratio <= self.at_most
        else:
            assert self.at_least is not None
            shown = f"{self.at_least:.0%}" if self.percent else f"{self.at_least:g}"
            target, ok = f">= {shown}", ratio >= self.at_least
        shown = f"**{self.ratio(ratio)}** ({each})"
        return f"| {n} | {self.measure} | {sides} | {shown} | {target} | {_met(ok)} |"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def rows(options: dict[str, Any]) -> list[Row]:
    conns, logins, flood = options["connections"], options["login_connections"], options["flood_connections"]
    return [
        Row(
            f"signed-in `GET /` vs the ceiling (the same page from a bare route), {conns} connections",
            lambda r: (r["page"].rps, r["ceiling"].rps),
            ",.0f",
            "req/s",
            at_least=MIN_PAGE_VS_CEILING,
        ),
        Row(
            "the ceiling vs a minimal Jinja page of the same size from a bare route",
            lambda r: (r["ceiling"].rps, r["minimal"].rps),
            ",.0f",
            "req/s",
            at_least=MIN_CEILING_VS_MINIMAL,
        ),
        Row(
            "anonymous `GET /login` vs the ceiling, server CPU per request",
            lambda r: (r["anonymous_cpu_us"], r["ceiling_cpu_us"]),
            ".0f",
            "µs",
            at_most=MAX_ANON_CPU_VS_CEILING,
        ),
        Row(
            f"signed-in `GET /` p99 while {logins} connections sign in vs alone",
            lambda r: (r["loaded_page"].p99_ms, r["page"].p99_ms),
            ".1f",
            "ms",
            at_most=MAX_LOADED_P99_RATIO,
        ),
        Row(
            f"a sign-in's median time while {flood} connections sign up with a taken address vs alone",
            lambda r: (r["flooded_sign_in_ms"], r["sign_in_ms"]),
            ".0f",
            "ms",
            at_most=MAX_FLOODED_SIGN_IN_RATIO,
        ),
        Row(
            f"`POST /login` ({logins} connections, bcrypt cost 12) vs the bcrypt limit on every core",
            lambda r: (r["login"].rps, r["bcrypt_limit"]),
            ".2f",
            "/s",
            at_least=MIN_LOGIN_SHARE,
            percent=True,
        ),
    ]


def table(
    runs: list[Run],
    *,
    options: dict[str, Any],
    round_trips: Counter[str],
    background: Counter[str],
    commands: Counter[str],
    pages: int,
    memory: SessionMemory,
    machine: str,
) -> str:
    lines = [
        machine,
        f"Runs: {len(runs)}, each measure {options['duration']:g} s after {options['warmup']:g} s of "
        "warm-up; ratios are taken within a run, shown as the median (then each run's)",
        "",
        "| # | Measure | Medians | Ratio | Target | |",
        "|---|---|---|---|---|---|",
    ]
    lines += [row.line(n, runs) for n, row in enumerate(rows(options), 1)]
    trips = sum(round_trips.values()) / pages
    sent = ", ".join(f"{name} {n / pages:.2f}" for name, n in round_trips.most_common())
    if background:  # the mail senders polling their stream meanwhile: not the pages' doing
        sent += (
            " (and the mail queue's polling: "
            + ", ".join(f"{name} {n / pages:.2f}" for name, n in background.most_common())
            + ")"
        )
    # A new pooled connection's HELLO now and then is no part of a page's cost.
    inside = ", ".join(f"{name} {n / pages:.2f}" for name, n in commands.most_common() if n / pages >= 0.005)
    lines.append(
        f"| 7 | Redis round trips per signed-in page (MONITOR), and the commands run (commandstats) | "
        f"sent: {sent}; run: {inside} | **{trips:.2f}** | <= {MAX_ROUND_TRIPS:g} | "
        f"{_met(trips <= MAX_ROUND_TRIPS)} |"
    )
    lines.append(
        "| 8 | Redis memory per session at one session per user (MEMORY USAGE) | "
        f"hash {memory.session:.0f} B + index share {memory.index_share:.0f} B | **{memory.total:.0f} B** | "
        f"<= {MAX_SESSION_BYTES} B | {_met(memory.total <= MAX_SESSION_BYTES)} |"
    )
    return "\n".join(lines)


def machine(redis_version: str, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    """One line: the hardware, the software versions, and how busy the box was."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    wrk = subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).split("Copyright")[0].strip()
    loads = " → ".join(", ".join(f"{x:.2f}" for x in load) for load in (load_before, load_after))
    return (
        f"Machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, redis {redis_version}, "
        f"uvicorn {version('uvicorn')} (1 worker, uvloop, httptools), {wrk_version}; "
        f"load average {loads} (before → after)"
    )
