"""Run wrk with bench/wrk.lua and read back the JSON line its done() hook prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk.lua")


class WrkError(RuntimeError):
    """wrk failed, or the server gave answers it should not have."""


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    bytes: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def bytes_per_response(self) -> float:
        return self.bytes / max(self.requests, 1)


@dataclass
class Run:
    """A wrk process under way; finish() waits for it."""

    process: subprocess.Popen[str]
    expect: tuple[int, ...]

    def finish(self) -> Result:
        """Wait for wrk and parse its result line; an error or an unexpected answer is a failure."""
        out, err = self.process.communicate()
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
        if self.process.returncode != 0 or line is None:
            raise WrkError(f"wrk exited with {self.process.returncode}: {err.strip() or out.strip()}")
        data = json.loads(line)
        errors = data["errors"]
        if self.expect:
            errors.pop("status")  # wrk counts every 4xx there; the script checked them instead
        if any(errors.values()) or data["unexpected"]:
            raise WrkError(f"wrk saw errors {errors} and {data['unexpected']} unexpected statuses")
        return Result(
            requests=data["requests"],
            seconds=data["duration_us"] / 1e6,
            bytes=data["bytes"],
            p50_ms=data["latency_us"]["p50"] / 1000,
            p99_ms=data["latency_us"]["p99"] / 1000,
        )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise WrkError("wrk is not on PATH: apt-get install wrk")
    return found


def start(
    base_url: str,
    method: str,
    path: str,
    entries: Sequence[str] = (),
    *,
    connections: int,
    seconds: float,
    expect: tuple[int, ...] = (),
) -> Run:
    """Start wrk in the background; entries are Cookie values (GET) or form bodies (POST).

    `expect`: the statuses every answer must have; by default any below 400.
    """
    # One thread: wrk then takes a fraction of one core, and the server keeps the rest of the box.
    argv = [
        wrk_binary(),
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",  # a login queued behind bcrypt may take seconds; that is latency, not an error
        "--script",
        str(SCRIPT),
        base_url + path,
        "--",
        method,
        path,
        ",".join(map(str, expect)) or "-",
        *entries,
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Run(process, expect)


def run(
    base_url: str,
    method: str,
    path: str,
    entries: Sequence[str] = (),
    *,
    connections: int,
    seconds: float,
    expect: tuple[int, ...] = (),
) -> Result:
    return start(
        base_url, method, path, entries, connections=connections, seconds=seconds, expect=expect
    ).finish()
