"""`python -m web`: settings errors, and the embedded Redis/MongoDB of a fresh checkout."""

from __future__ import annotations

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
from tests.helpers.servers import app_env, start_app
from web.embedded import Server

pytestmark = pytest.mark.slow


# Services that are never reached: the app stops at its settings.
NOWHERE = {
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "MONGODB_URL": "mongodb://127.0.0.1:1/app",
    "SMTP_URL": "smtp://127.0.0.1:1",
    "PUBLIC_URL": "https://app.example.com",
}


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
        ("SMTP_URL", "http://mail.example.com"),
        ("PUBLIC_URL", "ftp://app.example.com"),
    ],
)
def test_bad_setting_is_one_line_and_exit_status_2(variable: str, value: str, tmp_path: Path) -> None:
    env = app_env(**NOWHERE, SECRET_KEY="k" * 40)
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
    env = app_env(**NOWHERE)
    result = subprocess.run(
        [sys.executable, "-m", "web"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: SECRET_KEY: required")
    assert not (tmp_path / ".data").exists()  # nothing defaulted, nothing written


SIGNUP = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "password": PASSWORD}


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


def test_embedded_services_persist_and_leave_no_process_behind(tmp_path: Path) -> None:
    first = start_app(tmp_path, cwd=tmp_path, BCRYPT_ROUNDS="4")
    with first:
        children = descendants(first.process.pid)
        assert len(children) == 3  # redis-server, secantusd-py and the mail catcher
        banner = first.log()
        assert "Redis     embedded" in banner and "MongoDB   embedded" in banner
        assert f"Open http://localhost:{first.port}" in banner and "development" in banner
        with httpx.Client(base_url=first.url) as browser:
            r = browser.post("/signup", data=SIGNUP)
            assert r.status_code == 303
            assert "Secure" not in r.headers["set-cookie"]  # plain http in development
            assert browser.get("/").status_code == 200
        assert first.stop() == 0
    assert [pid for pid in children if alive(pid)] == []

    with start_app(tmp_path, cwd=tmp_path, BCRYPT_ROUNDS="4") as second:
        children = descendants(second.process.pid)
        with httpx.Client(base_url=second.url) as browser:
            r = browser.post("/login", data={"email": SIGNUP["email"], "password": PASSWORD})
            assert r.status_code == 303
            assert "Ada Lovelace" in browser.get("/").text
        assert second.stop(signal.SIGINT) == 0  # Ctrl-C
    assert [pid for pid in children if alive(pid)] == []
    assert (tmp_path / ".data" / "secret_key").exists()


def test_a_killed_app_takes_its_servers_with_it(tmp_path: Path) -> None:
    with start_app(tmp_path, cwd=tmp_path, BCRYPT_ROUNDS="4") as app:
        children = descendants(app.process.pid)
        assert len(children) == 3
        app.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in children if alive(pid)] == []


def test_sigterm_lets_in_flight_requests_finish(
    tmp_path: Path, redis_server: Server, mongo_server: Server, mail_catcher: Server
) -> None:
    app = start_app(
        tmp_path,
        cwd=tmp_path,
        REDIS_URL=redis_server.url,
        MONGODB_URL=mongo_server.url.rsplit("/", 1)[0] + "/graceful",
        SMTP_URL=mail_catcher.url,
        SECRET_KEY="k" * 40,
        COOKIE_SECURE="0",
        BCRYPT_ROUNDS="13",  # a sign-in that takes a while: long enough to stop the app during it
    )
    with app:
        assert httpx.post(f"{app.url}/signup", data=SIGNUP, timeout=30).status_code == 303
        result: dict[str, httpx.Response] = {}
        request = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(
                    f"{app.url}/login", data={"email": SIGNUP["email"], "password": PASSWORD}, timeout=30
                )
            )
        )
        # socket_timeout: should the sign-in never reach Redis, next_command() raises, not hangs.
        monitor = Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=10)
        with monitor.monitor() as commands:
            request.start()
            # The throttle check is the login's first step: once Redis sees it, the request is in flight.
            deadline = time.monotonic() + 30
            while "t:a:" not in commands.next_command()["command"]:
                assert time.monotonic() < deadline, "the sign-in never reached Redis's throttle"
        assert app.stop(signal.SIGTERM, within=30) == 0
        request.join(30)
    assert result["r"].status_code == 303
    assert "Shutting down" in app.log()
