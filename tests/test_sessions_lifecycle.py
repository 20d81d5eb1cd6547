"""Idle and absolute timeouts, the status poll that never extends a session, and refresh.

One test waits out a real idle timeout: Redis itself must expire the session, however often
its status is asked. The others move the session store's injected clock and read the exact
expiry Redis was given (PEXPIRETIME): no margin for a busy machine to eat into, and a
deadline off by a second fails.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette

from tests.conftest import HX, make_client, running, session_keys, signup
from tests.helpers.servers import counting_commands
from web.sessions.store import CREATED, SEEN
from web.settings import Settings

IDLE = 2  # seconds: the idle timeout of the one test on real time
ALIVE_AT_MOST = IDLE + 10  # a session still alive this long after that is never going to die
# On the injected clock any timeouts will do; these read easily.
CLOCKED_IDLE, CLOCKED_ABSOLUTE = 60, 150
JSON = {"Accept": "application/json"}


class Clock:
    """The session store's clock, standing still until a test moves it forward."""

    def __init__(self) -> None:
        # Whole seconds, and not behind the real time: Redis still expires keys by its own.
        self.now = math.ceil(time.time())

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


@pytest.fixture
async def idle_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 2 s idle timeout, and an absolute one too far off to end anything here."""
    timeouts = {"session_idle_timeout": IDLE, "session_absolute_timeout": 3600}
    async with running(settings, **timeouts) as app, make_client(app) as client:
        yield client


@pytest.fixture
async def clocked(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Clock]]:
    """The app with 60 s idle and 150 s absolute timeouts, its session store on a Clock."""
    timeouts = {"session_idle_timeout": CLOCKED_IDLE, "session_absolute_timeout": CLOCKED_ABSOLUTE}
    async with running(settings, **timeouts) as app:
        clock = Clock()
        app.state.services.store.clock = clock
        async with make_client(app) as client:
            yield client, clock


async def test_status_json_describes_the_session(client: httpx.AsyncClient, app: Starlette) -> None:
    assert (await client.get("/session", headers=JSON)).json() == {"authenticated": False}
    started = time.monotonic()
    await signup(client)
    r = await client.get("/session", headers=JSON)
    # Whole seconds that may have passed since the session began, however slow this machine is.
    passed = math.ceil(time.monotonic() - started)
    body = r.json()
    settings = app.state.services.settings
    assert body["authenticated"] is True
    assert body["idle_timeout"] == settings.session_idle_timeout
    assert settings.session_idle_timeout - passed <= body["expires_in"] <= settings.session_idle_timeout
    absolute = settings.session_absolute_timeout
    assert absolute - passed <= body["absolute_expires_in"] <= absolute
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


async def test_session_dies_after_the_idle_timeout_however_often_its_status_is_asked(
    idle_client: httpx.AsyncClient, redis: Redis
) -> None:
    started = time.monotonic()  # before the session exists: it cannot die sooner than IDLE after
    await signup(idle_client)
    remaining = []
    while (body := (await idle_client.get("/session", headers=JSON)).json())["authenticated"]:
        remaining.append(body["expires_in"])
        assert time.monotonic() - started < ALIVE_AT_MOST, f"still alive, the status said {remaining}"
        await asyncio.sleep(0.25)  # asking often, not synchronising: only Redis's expiry ends this
    assert time.monotonic() - started >= IDLE
    assert remaining[0] <= IDLE and remaining == sorted(remaining, reverse=True)  # only ever down
    assert session_keys(redis) == []
    assert (await idle_client.get("/")).headers["location"] == "/login"


async def test_activity_slides_the_idle_window_up_to_the_absolute_deadline_and_no_further(
    clocked: tuple[httpx.AsyncClient, Clock], redis: Redis
) -> None:
    client, clock = clocked
    await signup(client)
    (key,) = session_keys(redis)
    deadline = int(redis.hget(key, CREATED) or 0) + CLOCKED_ABSOLUTE
    assert deadline == clock.now + CLOCKED_ABSOLUTE
    assert redis.pexpiretime(key) == (clock.now + CLOCKED_IDLE) * 1000
    # A page view every 45 s keeps it alive through three idle windows; each view slides the
    # window from its own time, but never past the absolute deadline (the last one is capped).
    for _ in range(3):
        clock.advance(CLOCKED_IDLE * 3 // 4)
        assert (await client.get("/")).status_code == 200
        assert redis.pexpiretime(key) == min(clock.now + CLOCKED_IDLE, deadline) * 1000
    clock.now = deadline - 1
    assert (await client.get("/")).status_code == 200
    assert redis.pexpiretime(key) == deadline * 1000
    clock.now = deadline  # activity or not, this is the end
    r = await client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert session_keys(redis) == []


async def test_status_leaves_the_expiry_alone_and_refresh_slides_it(
    clocked: tuple[httpx.AsyncClient, Clock], redis: Redis
) -> None:
    client, clock = clocked
    await signup(client)
    (key,) = session_keys(redis)
    expires_at = redis.pexpiretime(key)
    clock.advance(40)
    assert (await client.get("/session", headers=JSON)).json()["authenticated"] is True
    assert (await client.get("/session", headers=HX)).status_code == 200
    assert redis.pexpiretime(key) == expires_at
    r = await client.post("/session/refresh", headers=JSON)
    assert r.status_code == 200
    assert r.json()["expires_in"] == CLOCKED_IDLE
    assert redis.pexpiretime(key) == (clock.now + CLOCKED_IDLE) * 1000
    widget = await client.post("/session/refresh", headers=HX)
    assert widget.text.lstrip().startswith('<div id="countdown"')
    plain = await client.post("/session/refresh")
    assert plain.status_code == 303


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
    with counting_commands(redis) as commands:
        for _ in range(10):
            assert (await client.get("/")).status_code == 200
    # One EVALSHA per page (the one round trip); inside it, the read and the TTL slide.
    assert commands == {"evalsha": 10, "hgetall": 10, "pexpireat": 10}


async def test_last_seen_is_rewritten_at_most_once_a_minute(
    clocked: tuple[httpx.AsyncClient, Clock], redis: Redis
) -> None:
    client, clock = clocked
    await signup(client)
    (key,) = session_keys(redis)
    seen = int(redis.hget(key, SEEN) or 0)
    for _ in range(5):
        clock.advance(10)
        assert (await client.get("/")).status_code == 200
    assert int(redis.hget(key, SEEN) or 0) == seen  # 50 s on: not yet
    clock.advance(10)
    assert (await client.get("/")).status_code == 200
    assert int(redis.hget(key, SEEN) or 0) == seen + 60
