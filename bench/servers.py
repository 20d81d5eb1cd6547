"""The processes under test: the app and the ceiling, each one uvicorn worker of its own."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from web.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, all of its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def own_cpu_seconds(pids: list[int]) -> float:
    """CPU time of this benchmark: itself, its finished children (wrk, bcrypt) and these servers."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    return done + sum(cpu_seconds(pid) for pid in pids)


def machine_cpu_seconds() -> tuple[float, float]:
    """Busy and stolen CPU time of the whole machine so far, all cores (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq) / CLOCK_TICK, steal / CLOCK_TICK


def _die_with_parent() -> None:
    # In the child before exec: SIGTERM when the benchmark dies (PR_SET_PDEATHSIG = 1), so an
    # interrupted run leaves no server behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Uvicorn:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def command(factory: str, port: int) -> list[str]:
    """The production command line (Procfile), one worker, without the per-request access log."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-proxy-headers",
        "--no-server-header",
        "--no-access-log",
    ]


def serve(name: str, factory: str, env: dict[str, str], log: Path, ready_path: str) -> Uvicorn:
    """Start uvicorn and wait until `ready_path` answers 200."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command(factory, port),
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    server = Uvicorn(name, f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + ready_path, timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer {ready_path} within {READY_TIMEOUT:.0f} s")
