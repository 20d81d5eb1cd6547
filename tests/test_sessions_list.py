"""The sessions page: every device of the user, each revocable; the index stays small and true."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette

from tests.conftest import HX, login, make_client, session_keys, set_session_cookie, signup
from web.sessions.agent import label
from web.sessions.store import MAX_SESSIONS_PER_USER

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130 Safari/537"
)


def handles(html: str) -> list[str]:
    return re.findall(r'<tr data-session="([^"]+)"', html)


def other_handle(html: str) -> str:
    """The handle of the one row that is not this device."""
    rows = re.findall(r'<tr data-session="([^"]+)"( aria-current="true")?', html)
    (handle,) = [h for h, current in rows if not current]
    return handle


Devices = tuple[httpx.AsyncClient, httpx.AsyncClient]


@pytest.fixture
async def devices(app: Starlette) -> AsyncIterator[Devices]:
    """One user, signed in on a Linux laptop with Firefox and a Windows desktop with Chrome."""
    async with (
        make_client(app, headers={"User-Agent": FIREFOX}) as laptop,
        make_client(app, headers={"User-Agent": CHROME}) as desktop,
    ):
        await signup(laptop)
        await login(desktop)
        yield laptop, desktop


async def test_both_devices_are_listed_with_labels(app: Starlette, devices: Devices) -> None:
    laptop, _ = devices
    r = await laptop.get("/sessions")
    assert r.status_code == 200
    assert len(handles(r.text)) == 2
    assert "Firefox on Linux" in r.text and "Chrome on Windows" in r.text
    assert r.text.count("this device") == 1
    assert "127.0.0.1" in r.text
    assert "Sign out all other sessions" in r.text
    # Each side sees itself as "this device".
    mine = re.search(r'<tr data-session="[^"]+" aria-current="true">\s*<td>([^<]+)<', r.text)
    assert mine and mine.group(1).strip() == "Firefox on Linux"


async def test_anonymous_sessions_page_redirects(client: httpx.AsyncClient) -> None:
    r = await client.get("/sessions")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = await client.post("/sessions/revoke-others")
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_revoking_one_session_kills_exactly_that_one(
    app: Starlette, devices: Devices, redis: Redis
) -> None:
    laptop, desktop = devices
    handle = other_handle((await laptop.get("/sessions")).text)
    r = await laptop.post(f"/sessions/{handle}/revoke")
    assert r.status_code == 303 and r.headers["location"] == "/sessions"
    assert len(session_keys(redis)) == 1
    dead = await desktop.get("/")
    assert dead.status_code == 303 and dead.headers["location"] == "/login"
    assert (await laptop.get("/")).status_code == 200
    assert len(handles((await laptop.get("/sessions")).text)) == 1


async def test_revoke_with_htmx_re_renders_the_list_in_place(app: Starlette, devices: Devices) -> None:
    laptop, _ = devices
    handle = other_handle((await laptop.get("/sessions")).text)
    r = await laptop.post(f"/sessions/{handle}/revoke", headers=HX)
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="session-list">')
    assert handle not in r.text and len(handles(r.text)) == 1
    # Revoking again is harmless: it is already gone.
    again = await laptop.post(f"/sessions/{handle}/revoke", headers=HX)
    assert again.status_code == 200 and len(handles(again.text)) == 1


async def test_sign_out_all_others_keeps_only_the_current(
    app: Starlette, devices: Devices, redis: Redis
) -> None:
    laptop, desktop = devices
    async with make_client(app) as third:
        await login(third)
        assert len(session_keys(redis)) == 3
        r = await laptop.post("/sessions/revoke-others", headers=HX)
        assert len(handles(r.text)) == 1 and "This is your only session." in r.text
        assert len(session_keys(redis)) == 1
        assert (await desktop.get("/")).status_code == 303
        assert (await third.get("/")).status_code == 303
        assert (await laptop.get("/")).status_code == 200


async def test_the_handle_leads_back_to_nothing(app: Starlette, devices: Devices, redis: Redis) -> None:
    laptop, desktop = devices
    page = (await laptop.get("/sessions")).text
    svc = app.state.services
    for handle in handles(page):
        assert not redis.exists(f"s:{handle}")
        for cookie in (handle, svc.signer.sign(handle) if len(handle) == 43 else handle + "." + handle):
            async with make_client(app) as thief:
                set_session_cookie(thief, cookie)
                assert (await thief.get("/")).status_code == 303
    cookie_ids = {c.split(".")[0] for c in (laptop.cookies["__Host-sid"], desktop.cookies["__Host-sid"])}
    assert not cookie_ids & set(handles(page))
    assert not any(d in page for d in (k.removeprefix("s:") for k in session_keys(redis)))


async def test_another_users_handle_revokes_nothing(app: Starlette, devices: Devices, redis: Redis) -> None:
    laptop, desktop = devices
    async with make_client(app) as mallory:
        await signup(mallory, email="mallory@example.com")
        target = other_handle((await laptop.get("/sessions")).text)
        await mallory.post(f"/sessions/{target}/revoke")
        assert len(session_keys(redis)) == 3
        assert (await desktop.get("/")).status_code == 200


async def test_dead_index_entries_are_pruned_on_read(app: Starlette, devices: Devices, redis: Redis) -> None:
    laptop, _ = devices
    (index,) = redis.keys("u:*")
    assert redis.zcard(index) == 2
    # A session that vanished without its index entry (expired, or a crash half-way).
    desktop_key = next(k for k in session_keys(redis) if label(redis.hget(k, "a")) == "Chrome on Windows")
    redis.delete(desktop_key)
    r = await laptop.get("/sessions")
    assert len(handles(r.text)) == 1
    assert redis.zcard(index) == 1


async def test_index_never_grows_past_its_cap(app: Starlette, redis: Redis) -> None:
    store = app.state.services.store
    seconds = itertools.count()
    store.clock = lambda: time.time() + next(seconds)  # each sign-in a moment later than the last
    async with make_client(app) as first:
        await signup(first)
        for _ in range(MAX_SESSIONS_PER_USER + 4):
            async with make_client(app) as c:
                assert (await login(c)).status_code == 303
        (index,) = redis.keys("u:*")
        assert redis.zcard(index) == MAX_SESSIONS_PER_USER
        assert len(session_keys(redis)) == MAX_SESSIONS_PER_USER
        # The oldest went first.
        assert (await first.get("/")).status_code == 303
