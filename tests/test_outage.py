"""Redis or MongoDB going away: a quick 503 page, never a traceback, and recovery on return."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette

from tests.conftest import HX, login, make_client, running, signup
from web.embedded import Server, start_mongo, start_redis
from web.settings import Settings

pytestmark = pytest.mark.slow
FAIL_FAST_S = 3.0  # "about a second" with room for a loaded CI machine; a hang would take 20 s+


@pytest.fixture
def own_redis(tmp_path: Path) -> AsyncIterator[Server]:
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
async def outage_app(settings: Settings, own_redis: Server) -> AsyncIterator[Starlette]:
    async with running(settings, redis_url=own_redis.url) as app:
        yield app


def assert_503(r: httpx.Response, started: float) -> None:
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert "Temporarily unavailable" in r.text
    assert "Traceback" not in r.text
    assert time.monotonic() - started < FAIL_FAST_S


async def test_redis_down_gives_503_then_recovers(
    outage_app: Starlette, own_redis: Server, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_client(outage_app) as client:
        await signup(client)
        assert (await client.get("/")).status_code == 200
        own_redis.stop()

        for method, path, headers in (
            ("GET", "/", {}),
            ("GET", "/", HX),
            ("POST", "/session/refresh", HX),
            ("GET", "/session", {}),
        ):
            started = time.monotonic()
            r = await client.request(method, path, headers=headers)
            assert_503(r, started)
        htmx = await client.get("/", headers=HX)
        assert htmx.headers["hx-retarget"] == "#alerts" and "<html" not in htmx.text
        started = time.monotonic()
        assert_503(await login(client), started)
        health = await client.get("/healthz")
        assert health.status_code == 503 and health.json() == {"redis": "down", "mongodb": "ok"}

        # Same port, same append-only file: the session is still there, and so is the app.
        restarted = start_redis(
            Path(own_redis.process.args[own_redis.process.args.index("--dir") + 1]), port=own_redis.port
        )
        try:
            r = await client.get("/")
            assert r.status_code == 200 and "Ada Lovelace" in r.text
            assert (await client.get("/healthz")).json() == {"redis": "ok", "mongodb": "ok"}
        finally:
            restarted.stop()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert not [rec for rec in caplog.records if rec.exc_info]


async def test_mongodb_down_gives_503_for_sign_in_but_pages_keep_working(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mongo = start_mongo(tmp_path / "mongo")
    try:
        async with running(settings, mongodb_url=mongo.url) as app, make_client(app) as client:
            await signup(client)
            mongo.stop()
            # The signed-in page needs no database: it keeps working through the outage.
            assert (await client.get("/")).status_code == 200
            async with make_client(app) as other:
                started = time.monotonic()
                assert_503(await login(other), started)
                started = time.monotonic()
                assert_503(await signup(other, email="grace@example.com"), started)
            assert (await client.get("/healthz")).json() == {"redis": "ok", "mongodb": "down"}
            mongo = start_mongo(tmp_path / "mongo", port=mongo.port)
            async with make_client(app) as other:
                assert (await login(other)).status_code == 303
    finally:
        mongo.stop()
    assert not [rec for rec in caplog.records if rec.exc_info]


async def test_a_sign_in_that_fails_half_way_leaves_no_half_session(
    client: httpx.AsyncClient, app: Starlette, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis fails as the session is written: 503, no cookie, and index and sessions still agree.

    Index entry and session are written by one script, so the only half-way left is a reply
    lost after the script ran: a session nobody holds the cookie of, listed like any other.
    """
    await signup(client)
    client.cookies.clear()
    store = app.state.services.store
    real_create = store.create_for_user

    async def reply_lost(*args: object, **kwargs: object) -> int:
        await real_create(*args, **kwargs)
        raise RedisConnectionError("connection lost half-way")

    monkeypatch.setattr(store, "create_for_user", reply_lost)
    r = await login(client)
    assert r.status_code == 503
    assert "set-cookie" not in r.headers
    (index,) = redis.keys("u:*")
    assert sorted(f"s:{d}" for d in redis.zrange(index, 0, -1)) == sorted(redis.keys("s:*"))
    assert redis.zcard(index) == 2
    monkeypatch.undo()
    async with make_client(app) as ada:
        await login(ada)
        page = await ada.get("/sessions")
        assert page.text.count("<tr data-session=") == 3
    assert sorted(f"s:{d}" for d in redis.zrange(index, 0, -1)) == sorted(redis.keys("s:*"))


MAIL_FLOWS = [
    ("POST", "/password/forgot", {"email": "ada@example.com"}),
    ("GET", "/password/reset/" + "A" * 43, None),
    ("POST", "/password/reset/" + "A" * 43, {"new_password": "a brand new passphrase"}),
    ("GET", "/email/verify/" + "A" * 43, None),
    ("POST", "/email/verify/resend", {}),
    ("POST", "/account/email", {"new_email": "ada@new.example", "current_password": "x" * 12}),
]


async def test_mail_flows_say_503_while_redis_is_down(outage_app: Starlette, own_redis: Server) -> None:
    async with make_client(outage_app) as client:
        await signup(client)
        own_redis.stop()
        for method, path, data in MAIL_FLOWS:
            started = time.monotonic()
            assert_503(await client.request(method, path, data=data), started)


async def test_mail_flows_say_503_while_mongodb_is_down(settings: Settings, tmp_path: Path) -> None:
    mongo = start_mongo(tmp_path / "mongo")
    try:
        async with running(settings, mongodb_url=mongo.url) as app, make_client(app) as client:
            await signup(client)
            mongo.stop()
            for method, path, data in MAIL_FLOWS:
                started = time.monotonic()
                r = await client.request(method, path, data=data)
                # A link's token is read from Redis first: an unknown one is gone (410) without MongoDB.
                if r.status_code == 410:
                    assert path.startswith(("/password/reset/", "/email/verify/A"))
                    continue
                assert_503(r, started)
            # Pages that need no MongoDB keep working.
            assert (await client.get("/")).status_code == 200
    finally:
        mongo.stop()
