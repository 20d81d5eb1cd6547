"""Medians and ratios of the runs, the markdown table, and the JSON kept in bench/results/."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.redis_probe import SessionMemory
from bench.wrk import Result, wrk_binary

# Targets from the issue, for 2 cores with everything on one box.
MIN_PAGE_VS_CEILING = 0.35
MAX_LOADED_P99_RATIO = 3.0
MIN_LOGIN_SHARE = 0.80
MAX_ROUND_TRIPS = 1.0
MAX_SESSION_BYTES = 300

# Each figure taken from one run's raw results; the table shows the median over runs.
FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "page_rps": lambda r: r["page"].rps,
    "page_p50_ms": lambda r: r["page"].p50_ms,
    "page_p99_ms": lambda r: r["page"].p99_ms,
    "ceiling_rps": lambda r: r["ceiling"].rps,
    "ceiling_p50_ms": lambda r: r["ceiling"].p50_ms,
    "ceiling_p99_ms": lambda r: r["ceiling"].p99_ms,
    "page_vs_ceiling": lambda r: r["page"].rps / r["ceiling"].rps,
    "page_cpu_us": lambda r: r["page_cpu_us"],
    "ceiling_cpu_us": lambda r: r["ceiling_cpu_us"],
    "cpu_page_vs_ceiling": lambda r: r["ceiling_cpu_us"] / r["page_cpu_us"],
    "loaded_rps": lambda r: r["loaded_page"].rps,
    "loaded_p50_ms": lambda r: r["loaded_page"].p50_ms,
    "loaded_p99_ms": lambda r: r["loaded_page"].p99_ms,
    "loaded_p99_ratio": lambda r: r["loaded_page"].p99_ms / r["page"].p99_ms,
    "loaded_logins_rps": lambda r: r["loaded_login"].rps,
    "login_rps": lambda r: r["login"].rps,
    "login_p50_ms": lambda r: r["login"].p50_ms,
    "login_cpu_us": lambda r: r["login_cpu_us"],
    "login_redis_commands": lambda r: sum(r["login_redis"].values()),
    "bcrypt_limit": lambda r: r["bcrypt_limit"],
    "login_share": lambda r: r["login"].rps / r["bcrypt_limit"],
    "anon_rps": lambda r: r["anonymous"].rps,
    "anon_p50_ms": lambda r: r["anonymous"].p50_ms,
    "anon_p99_ms": lambda r: r["anonymous"].p99_ms,
    "anon_cpu_us": lambda r: r["anonymous_cpu_us"],
    "anon_redis_commands": lambda r: sum(r["anonymous_redis"].values()),
    "redis_commands_per_page": lambda r: sum(r["page_redis"].values()),
}


def machine(redis_version: str, load_before: tuple[float, float, float]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True, check=False)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis": redis_version,
        "uvicorn": version("uvicorn"),
        "wrk": (wrk_version.stdout or wrk_version.stderr).split("Copyright")[0].strip(),
        "load_average_before": load_before,
    }


def _raw(run: dict[str, Any]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) | {"rps": v.rps} if isinstance(v, Result) else v for k, v in run.items()}


def summarise(
    runs: list[dict[str, Any]],
    *,
    round_trips: dict[str, float],
    memory: SessionMemory,
    machine: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    per_run = {name: [figure(run) for run in runs] for name, figure in FIGURES.items()}
    commands: dict[str, list[float]] = {}
    for run in runs:
        for name, n in run["page_redis"].items():
            commands.setdefault(name, []).append(n)
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "options": options,
        "median": {name: statistics.median(values) for name, values in per_run.items()},
        "per_run": per_run,
        "redis_commands_per_page": {name: statistics.median(v) for name, v in commands.items()},
        "round_trips_per_page": round_trips,
        "memory_per_session": dataclasses.asdict(memory) | {"total": memory.total},
        "runs": [_raw(run) for run in runs],
    }


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(s: dict[str, Any]) -> str:
    m, runs, opt = s["median"], s["per_run"], s["options"]
    conns, logins = opt["connections"], opt["login_connections"]
    trips = sum(s["round_trips_per_page"].values())
    mem = s["memory_per_session"]

    def each(name: str, fmt: str) -> str:
        return " / ".join(format(v, fmt) for v in runs[name])

    def page(prefix: str) -> str:
        rps, p50, p99 = m[f"{prefix}_rps"], m[f"{prefix}_p50_ms"], m[f"{prefix}_p99_ms"]
        cpu = f"; {m[f'{prefix}_cpu_us']:.0f} µs CPU/req" if f"{prefix}_cpu_us" in m else ""
        return f"{rps:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms{cpu}"

    # A new pooled connection's HELLO now and then is no part of a page's cost.
    commands = ", ".join(f"{name} {n:.2f}" for name, n in s["redis_commands_per_page"].items() if n >= 0.005)
    sent = ", ".join(f"{name} {n:.2f}" for name, n in s["round_trips_per_page"].items())
    rows: list[tuple[str, ...]] = []

    def row(
        num: str, measure: str, median: str, per_run: str = "", target: str = "", ok: bool | None = None
    ) -> None:
        rows.append((num, measure, median, per_run, target, "" if ok is None else _met(ok)))

    row("1", f"signed-in `GET /` ({conns} conns)", page("page"), each("page_rps", ",.0f"))
    row("2", "same page, bare route, no session (ceiling)", page("ceiling"), each("ceiling_rps", ",.0f"))
    ratio = m["page_vs_ceiling"]
    row(
        "",
        "(1) / (2), requests/s",
        f"{ratio:.2f}",
        each("page_vs_ceiling", ".2f"),
        f">= {MIN_PAGE_VS_CEILING}",
        ratio >= MIN_PAGE_VS_CEILING,
    )
    row(
        "",
        "(2) / (1), server CPU per request",
        f"{m['cpu_page_vs_ceiling']:.2f}",
        each("cpu_page_vs_ceiling", ".2f"),
    )
    row("3", f"signed-in `GET /` while {logins} conns sign in", page("loaded"), each("loaded_p99_ms", ".1f"))
    ratio = m["loaded_p99_ratio"]
    row(
        "",
        "(3) p99 / (1) p99",
        f"{ratio:.2f}x",
        each("loaded_p99_ratio", ".2f"),
        f"<= {MAX_LOADED_P99_RATIO:g}x",
        ratio <= MAX_LOADED_P99_RATIO,
    )
    row("", "sign-ins meanwhile", f"{m['loaded_logins_rps']:.1f} /s", each("loaded_logins_rps", ".1f"))
    row(
        "4",
        f"`POST /login` ({logins} conns, bcrypt 12 rounds)",
        f"{m['login_rps']:.2f} /s, p50 {m['login_p50_ms']:.0f} ms; {m['login_cpu_us'] / 1000:.0f} ms CPU, "
        f"{m['login_redis_commands']:.1f} Redis commands each",
        each("login_rps", ".2f"),
    )
    row(
        "",
        f"bcrypt limit ({s['machine']['cores']} processes)",
        f"{m['bcrypt_limit']:.2f} checks/s",
        each("bcrypt_limit", ".2f"),
    )
    ratio = m["login_share"]
    row(
        "",
        "(4) / bcrypt limit",
        f"{ratio:.0%}",
        each("login_share", ".0%"),
        f">= {MIN_LOGIN_SHARE:.0%}",
        ratio >= MIN_LOGIN_SHARE,
    )
    row("5", f"anonymous `GET /login` ({conns} conns)", page("anon"), each("anon_rps", ",.0f"))
    row(
        "",
        "Redis commands per anonymous page",
        f"{m['anon_redis_commands']:.2f}",
        each("anon_redis_commands", ".2f"),
    )
    row(
        "6",
        "Redis round trips per signed-in page (MONITOR)",
        f"{trips:.2f} ({sent})",
        "",
        f"<= {MAX_ROUND_TRIPS:g}",
        trips <= MAX_ROUND_TRIPS,
    )
    row(
        "",
        "Redis commands per page (commandstats, in-script too)",
        f"{m['redis_commands_per_page']:.2f} ({commands})",
        each("redis_commands_per_page", ".2f"),
    )
    row("", "Redis memory per session (MEMORY USAGE)",
        f"{mem['total']:.0f} B (hash {mem['session']:.0f} + index share {mem['index_share']:.0f})", "",
        f"<= {MAX_SESSION_BYTES} B", mem["total"] <= MAX_SESSION_BYTES)  # fmt: skip
    mach = s["machine"]
    load = ", ".join(f"{x:.2f}" for x in mach["load_average_before"])
    others = " / ".join(f"{r['other_cores']:.2f}" for r in s["runs"])
    steal = " / ".join(f"{r['steal_cores']:.2f}" for r in s["runs"])
    lines = [
        f"Machine: {mach['cores']} cores, {mach['cpu']}; Python {mach['python']}, redis {mach['redis']}, "
        f"uvicorn {mach['uvicorn']} (1 worker, uvloop, httptools), {mach['wrk']}; load average before {load}",
        f"{len(runs['page_rps'])} runs of {opt['duration']:g} s each after {opt['warmup']:g} s warm-up; "
        "medians, and each run's figure (run 1 / run 2 / ...)",
        f"Other processes used {others} cores during the runs (steal {steal}): the noise to allow for",
        "",
        "| # | Measure | Median | Runs | Target | |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def save(summary: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
