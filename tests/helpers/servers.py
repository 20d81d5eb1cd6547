"""The app as a process of its own, and the Redis commands it runs: for tests, e2e and bench.

One launcher: `python -m web` or uvicorn on a free port, with only the settings the caller
gives (every variable the app reads is cleared first), ready once its ready path answers 200,
tied to this process's life (PR_SET_PDEATHSIG, as web.embedded ties its servers to the app),
and a loud failure with the log's tail when it exits or never answers.
One counter: the commands Redis ran during a block, from INFO commandstats.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from web.embedded import die_with, free_port
from web.server import LimitedHttpToolsProtocol
from web.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
READY_WITHIN = 60.0  # seconds; `python -m web` with embedded services needs a few of them
STOP_WITHIN = 15.0
LOG_TAIL = 3000  # characters of the log quoted when the app fails to start


class AppDidNotStart(RuntimeError):
    """The app exited, or never answered its ready path; the message quotes its log."""


def app_env(**env: str) -> dict[str, str]:
    """This process's environment without any variable the app reads, then `env`."""
    return {**{k: v for k, v in os.environ.items() if k not in VARIABLES}, **env}


@dataclass
class AppProcess:
    """One app process: where it answers, and its log."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, within: float = STOP_WITHIN) -> int:
        """Send `sig`, wait for the exit (SIGKILL after `within` seconds); return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def launch(
    argv: list[str],
    *,
    port: int,
    env: dict[str, str],
    log_path: Path,
    name: str = "app",
    cwd: Path = ROOT,
    ready_path: str = "/healthz",
    within: float = READY_WITHIN,
) -> AppProcess:
    """Start `argv` (listening on 127.0.0.1:`port`); return once `ready_path` answers 200.

    The app is told its port, and its public URL unless `env` says otherwise.
    """
    own = {"PUBLIC_URL": f"http://localhost:{port}", **env, "PORT": str(port)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=app_env(**own),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # An interrupted test run or benchmark must leave no app behind.
            preexec_fn=die_with(os.getpid()),
        )
    app = AppProcess(name, f"http://127.0.0.1:{port}", port, process, log_path)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AppDidNotStart(f"{name} exited with status {process.returncode}:\n{app.log()[-LOG_TAIL:]}")
        with suppress(httpx.TransportError):
            if httpx.get(app.url + ready_path, timeout=1).status_code == 200:
                return app
        time.sleep(0.05)  # polling a process that is starting, not synchronising a test
    app.stop(signal.SIGKILL)
    raise AppDidNotStart(f"{name} did not answer {ready_path} within {within:g} s:\n{app.log()[-LOG_TAIL:]}")


def start_app(log_dir: Path, *, cwd: Path = ROOT, **env: str) -> AppProcess:
    """`python -m web` on a free port with these settings (no REDIS_URL: embedded services).

    With REDIS_URL and MONGODB_URL, the app also needs SECRET_KEY and SMTP_URL.
    """
    port = free_port()
    return launch(
        [sys.executable, "-m", "web"],
        port=port,
        env=env,
        log_path=log_dir / f"app-{port}.log",
        cwd=cwd,
    )


def uvicorn_command(factory: str, port: int) -> list[str]:
    """Uvicorn as web.server runs it in production, one worker, without the per-request log."""
    protocol = f"{LimitedHttpToolsProtocol.__module__}:{LimitedHttpToolsProtocol.__qualname__}"
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
        protocol,  # production's httptools, with its cap on the size of a request's head
        "--no-proxy-headers",
        "--no-server-header",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "10",
    ]


def start_uvicorn(
    factory: str, log_dir: Path, *, name: str = "app", ready_path: str = "/healthz", **env: str
) -> AppProcess:
    """An app factory (`web.app:from_env`, `bench.ceiling:create`) under uvicorn on a free port."""
    port = free_port()
    return launch(
        uvicorn_command(factory, port),
        port=port,
        env=env,
        log_path=log_dir / f"{name}-{port}.log",
        name=name,
        ready_path=ready_path,
    )


# -- what Redis runs --------------------------------------------------------------------------


def command_calls(redis: Any) -> Counter[str]:
    """Calls per command since the server started (INFO commandstats).

    `redis` is a synchronous client; on a cluster, one whose info() sums over the masters
    (tests/cluster/conftest.py).
    """
    stats: dict[str, Any] = redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


@contextmanager
def counting_commands(redis: Any) -> Iterator[Counter[str]]:
    """Count the commands Redis runs during the block, filled in when the block ends.

    Every client's commands count, and those a Lua script runs beside its EVALSHA; the INFO
    calls that take the count do not.
    """
    counted: Counter[str] = Counter()
    before = command_calls(redis)
    yield counted
    counted.update(command_calls(redis) - before)
    del counted["info"]
