"""Idle and absolute timeouts on real Redis TTLs; a status poll that never extends the session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette

from tests.conftest import HX, make_client, running, session_keys, signup
from web.settings import Settings

IDLE, ABSOLUTE = 2, 4
JSON = {"Accept": "application/json"}


@pytest.fixture
async def short_app(settings: Settings) -> AsyncIterator[Starlette]:
    async with running(settings, session_idle_timeout=IDLE, session_absolute_timeout=ABSOLUTE) as app:
        yield app


@pytest.fixture
async def short_client(short_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(short_app) as client:
        yield client


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float, every: float = 0.1) -> float:
    """Poll a condition; return how long it took to become true."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await condition():
            return time.monotonic() - started
        await asyncio.sleep(every)
    raise AssertionError(f"condition still false after {within} s")


async def anonymous(client: httpx.AsyncClient) -> bool:
    return (await client.get("/session", headers=JSON)).json() == {"authenticated": False}


async def test_status_json_describes_the_session(client: httpx.AsyncClient, app: Starlette) -> None:
    assert (await client.get("/session", headers=JSON)).json() == {"authenticated": False}
    await signup(client)
    r = await client.get("/session", headers=JSON)
    body = r.json()
    settings = app.state.services.settings
    assert body["authenticated"] is True
    assert body["idle_timeout"] == settings.session_idle_timeout
    assert settings.session_idle_timeout - 2 <= body["expires_in"] <= settings.session_idle_timeout
    assert (
        settings.session_absolute_timeout - 2
        <= body["absolute_expires_in"]
        <= settings.session_absolute_timeout
    )
    assert "Accept" in r.headers["vary"]
    assert r.headers["cache-control"] == "no-store"


async def test_status_html_is_the_countdown_widget(client: httpx.AsyncClient) -> None:
    await signup(client)
    for headers in (HX, {}):
        r = await client.get("/session", headers=headers)
        assert r.text.lstrip().startswith('<div id="countdown"')
        assert 'hx-trigger="every 30s, countdown:resync"' in r.text
        assert 'data-expires-in="' in r.text
    client.cookies.clear()
    expired = await client.get("/session", headers=HX)
    assert "Your session has expired" in expired.text
    assert "hx-trigger" not in expired.text  # a dead session stops polling


async def test_session_dies_after_the_idle_timeout(short_client: httpx.AsyncClient, redis: Redis) -> None:
    await signup(short_client)
    took = await wait_until(lambda: anonymous(short_client), within=IDLE + 3)
    assert took >= IDLE - 0.5
    assert session_keys(redis) == []
    assert (await short_client.get("/")).headers["location"] == "/login"


async def test_polling_the_status_does_not_keep_the_session_alive(short_client: httpx.AsyncClient) -> None:
    await signup(short_client)
    started = time.monotonic()
    remaining = []
    while (r := await short_client.get("/session", headers=JSON)).json()["authenticated"]:
        remaining.append(r.json()["expires_in"])
        await asyncio.sleep(0.5)  # the widget's pace, not a synchronisation
    assert time.monotonic() - started <= IDLE + 1
    assert remaining == sorted(remaining, reverse=True)  # it only ever went down


async def test_busy_session_outlives_idle_timeout_but_not_the_absolute_one(
    short_client: httpx.AsyncClient, short_app: Starlette, redis: Redis
) -> None:
    await signup(short_client)
    (key,) = session_keys(redis)
    created = int(redis.hget(key, "c") or 0)
    deadline = created + ABSOLUTE
    started = time.monotonic()
    alive_past_idle = False
    while (await short_client.get("/")).status_code == 200:
        elapsed = time.monotonic() - started
        alive_past_idle |= elapsed > IDLE + 0.5
        before_ms = int(time.time() * 1000)  # read before PTTL: the expiry is at or after before + ttl
        ttl_ms = redis.pttl(key)
        if ttl_ms > 0:
            assert before_ms + ttl_ms <= deadline * 1000, "TTL reaches past the absolute deadline"
        await asyncio.sleep(0.3)
    assert alive_past_idle
    assert time.time() >= deadline - 0.1  # it ended at the absolute deadline, not before
    assert time.monotonic() - started <= ABSOLUTE + 1


async def test_refresh_slides_the_idle_window(short_client: httpx.AsyncClient, redis: Redis) -> None:
    await signup(short_client)
    (key,) = session_keys(redis)
    await wait_until(lambda: _below(redis, key, 1200), within=IDLE)
    r = await short_client.post("/session/refresh", headers=JSON)
    assert r.status_code == 200
    assert r.json()["expires_in"] == IDLE
    assert redis.pttl(key) > 1500
    widget = await short_client.post("/session/refresh", headers=HX)
    assert widget.text.lstrip().startswith('<div id="countdown"')
    plain = await short_client.post("/session/refresh")
    assert plain.status_code == 303


async def _below(redis: Redis, key: str, ms: int) -> bool:
    return 0 < redis.pttl(key) < ms


async def test_refresh_when_anonymous_is_401(client: httpx.AsyncClient) -> None:
    assert (await client.post("/session/refresh", headers=JSON)).status_code == 401
    assert (await client.post("/session/refresh", headers=JSON)).json() == {"authenticated": False}
    hx = await client.post("/session/refresh", headers=HX)
    assert hx.status_code == 401 and "Your session has expired" in hx.text
    assert (await client.post("/session/refresh")).status_code == 401


async def test_a_steady_page_view_is_one_round_trip_and_no_write(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await signup(client)
    await client.get("/")  # warm: loads the scripts

    def calls() -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in redis.info("commandstats").items()}

    before = calls()
    for _ in range(10):
        assert (await client.get("/")).status_code == 200
    after = calls()
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    # One EVALSHA per page (the one round trip); inside it, the read and the TTL slide.
    # INFO itself is the only other command counted.
    delta.pop("info", None)
    assert delta == {"evalsha": 10, "hgetall": 10, "pexpireat": 10}


async def test_last_seen_is_rewritten_at_most_once_a_minute(
    client: httpx.AsyncClient, app: Starlette, redis: Redis
) -> None:
    await signup(client)
    (key,) = session_keys(redis)
    seen = int(redis.hget(key, "s") or 0)
    for _ in range(5):
        await client.get("/")
    assert int(redis.hget(key, "s") or 0) == seen
    store = app.state.services.store
    store.clock = lambda: time.time() + 61  # an injected clock, a minute on
    await client.get("/")
    assert int(redis.hget(key, "s") or 0) >= seen + 61
