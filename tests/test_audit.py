"""The audit log: one JSON line per security event, with no password and no session id in it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import PASSWORD, login, make_client, set_session_cookie, signup
from web.audit import JsonFormatter, logger


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def audit_lines(app: Starlette) -> Iterator[Lines]:
    handler = Lines()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def test_every_security_event_is_one_json_line(
    app: Starlette, audit_lines: Lines, client: httpx.AsyncClient
) -> None:
    await signup(client)
    async with make_client(app) as other:
        await login(other, password="wrong password here")
        await login(other, email="unknown@example.com", password="wrong password here")
        await login(other)
        stolen = other.cookies["__Host-sid"]
        handle = re.findall(r'<tr data-session="([^"]+)"', (await client.get("/sessions")).text)
        current = re.search(r'<tr data-session="([^"]+)" aria-current', (await client.get("/sessions")).text)
        assert current is not None
        target = next(h for h in handle if h != current.group(1))
        await client.post(f"/sessions/{target}/revoke")
        set_session_cookie(other, stolen)
        await other.get("/")  # its session was revoked: noticed on read
    await client.post(
        "/account/password", data={"current_password": PASSWORD, "new_password": "another good passphrase"}
    )
    await client.post("/logout")
    for _ in range(10):
        await login(client, password="wrong password here")
    await login(client)

    events = audit_lines.events()
    names = [e["event"] for e in events]
    for expected in (
        "signup",
        "login_failure",
        "login_success",
        "session_revoked",
        "session_expired",
        "password_changed",
        "logout",
        "login_throttled",
    ):
        assert expected in names, expected
    for e in events:
        assert {"time", "event", "user_id", "ip", "session", "level"} <= e.keys()
        assert e["ip"] == "127.0.0.1"
    # A failure for an unknown account names no user and no email.
    unknown = [e for e in events if e["event"] == "login_failure" and e["user_id"] is None]
    assert len(unknown) == 1
    # Session ids, cookies and passwords appear nowhere; the session field is a keyed hash.
    text = "\n".join(audit_lines.lines)
    for secret in (
        PASSWORD,
        "wrong password here",
        "another good passphrase",
        stolen,
        stolen.split(".")[0],
        client.cookies.get("__Host-sid") or "unused-cookie",
    ):
        assert secret not in text
    assert "@example.com" not in text
    revoked = next(e for e in events if e["event"] == "session_revoked")
    expired = next(e for e in events if e["event"] == "session_expired")
    assert revoked["session"] == expired["session"] == target
    assert next(e for e in events if e["event"] == "login_throttled")["level"] == "warning"


async def test_audit_level_can_silence_routine_events(
    app: Starlette, audit_lines: Lines, client: httpx.AsyncClient
) -> None:
    logger.setLevel(logging.WARNING)
    try:
        await signup(client)
        client.cookies.clear()
        await login(client, password="wrong password here")
    finally:
        logger.setLevel(logging.INFO)
    assert [e["event"] for e in audit_lines.events()] == ["login_failure"]
