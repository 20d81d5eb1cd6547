"""`python -m web`: settings errors, and the embedded Redis/MongoDB of a fresh checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.conftest import PASSWORD
from web.embedded import Server, free_port

pytestmark = pytest.mark.slow


def env_without_services(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGODB_URL", "SECRET_KEY")}
    return {**env, **extra}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SESSION_IDLE_TIMEOUT", "soon"),
        ("SESSION_ABSOLUTE_TIMEOUT", "-5"),
        ("COOKIE_SECURE", "maybe"),
        ("BCRYPT_ROUNDS", "3"),
        ("PORT", "99999"),
        ("REDIS_URL", "http://localhost"),
        ("MONGODB_URL", "mongodb://localhost:27017"),
        ("SECRET_KEY", "short"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
    ],
)
def test_bad_setting_is_one_line_and_exit_status_2(variable: str, value: str, tmp_path: Path) -> None:
    env = env_without_services(
        REDIS_URL="redis://127.0.0.1:1/0", MONGODB_URL="mongodb://127.0.0.1:1/app", SECRET_KEY="k" * 40
    )
    env[variable] = value
    result = subprocess.run(
        [sys.executable, "-m", "web"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {variable}:")
    assert "Traceback" not in result.stderr


def test_production_without_secret_key_is_an_error(tmp_path: Path) -> None:
    env = env_without_services(REDIS_URL="redis://127.0.0.1:1/0", MONGODB_URL="mongodb://127.0.0.1:1/app")
    result = subprocess.run(
        [sys.executable, "-m", "web"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: SECRET_KEY: required")
    assert not (tmp_path / ".data").exists()  # nothing defaulted, nothing written


def descendants(pid: int) -> list[int]:
    """Every living process below pid, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class App:
    def __init__(self, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(cwd / f"app-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web"],
            cwd=cwd,
            env=env_without_services(PORT=str(self.port), BCRYPT_ROUNDS="4"),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (cwd / f"app-{self.port}.log").read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the app did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.log.close()
        return code


def test_embedded_services_persist_and_leave_no_process_behind(tmp_path: Path) -> None:
    workdir = tmp_path
    first = App(workdir)
    children = descendants(first.process.pid)
    assert len(children) == 2  # redis-server and secantusd-py
    banner = (workdir / f"app-{first.port}.log").read_text()
    assert "Redis     embedded" in banner and "MongoDB   embedded" in banner
    assert f"Open http://127.0.0.1:{first.port}" in banner and "development" in banner
    with httpx.Client(base_url=first.url) as browser:
        r = browser.post(
            "/signup",
            data={
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada@example.com",
                "password": PASSWORD,
            },
        )
        assert r.status_code == 303
        assert "Secure" not in r.headers["set-cookie"]  # plain http in development
        assert browser.get("/").status_code == 200
    assert first.stop() == 0
    assert [pid for pid in children if alive(pid)] == []

    second = App(workdir)
    try:
        with httpx.Client(base_url=second.url) as browser:
            r = browser.post("/login", data={"email": "ada@example.com", "password": PASSWORD})
            assert r.status_code == 303
            assert "Ada Lovelace" in browser.get("/").text
    finally:
        children = descendants(second.process.pid)
        assert second.stop(signal.SIGINT) == 0  # Ctrl-C
    assert [pid for pid in children if alive(pid)] == []
    assert (workdir / ".data" / "secret_key").exists()


def test_a_killed_app_takes_its_servers_with_it(tmp_path: Path) -> None:
    app = App(tmp_path)
    children = descendants(app.process.pid)
    assert len(children) == 2
    app.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in children if alive(pid)] == []


def test_sigterm_lets_in_flight_requests_finish(
    tmp_path: Path, redis_server: Server, mongo_server: Server
) -> None:
    port = free_port()
    env = env_without_services(
        REDIS_URL=redis_server.url,
        MONGODB_URL=mongo_server.url.rsplit("/", 1)[0] + "/graceful",
        SECRET_KEY="k" * 40,
        COOKIE_SECURE="0",
        PORT=str(port),
        BCRYPT_ROUNDS="13",  # a sign-in that takes a while: long enough to stop the app during it
    )
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, "-m", "web"], env=env, cwd=tmp_path, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        form = {"first_name": "Ada", "last_name": "L", "email": "grace.ful@example.com", "password": PASSWORD}
        assert httpx.post(f"{url}/signup", data=form, timeout=30).status_code == 303
        result: dict[str, httpx.Response] = {}
        monitor = Redis.from_url(redis_server.url, decode_responses=True)
        with monitor.monitor() as commands:
            request = threading.Thread(
                target=lambda: result.update(
                    r=httpx.post(
                        f"{url}/login", data={"email": form["email"], "password": PASSWORD}, timeout=30
                    )
                )
            )
            request.start()
            # The throttle check is the login's first step: once Redis sees it, the request is in flight.
            for command in commands.listen():
                if "t:a:" in command["command"]:
                    break
        app.send_signal(signal.SIGTERM)
        request.join(30)
        assert result["r"].status_code == 303
        assert app.wait(30) == 0
    finally:
        if app.poll() is None:
            app.kill()
    assert "Shutting down" in log.read_text()
