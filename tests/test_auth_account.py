"""Password change and login throttling."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette

from tests.conftest import HX, PASSWORD, login, make_client, running, session_keys, signup
from web.auth.users import User
from web.settings import Settings

NEW_PASSWORD = "a brand new passphrase for ada"


def change(old: str = PASSWORD, new: str = NEW_PASSWORD) -> dict[str, str]:
    return {"current_password": old, "new_password": new}


# -- change password ------------------------------------------------------------------------


async def test_password_change_ends_the_other_sessions_and_rotates_this_one(
    app: Starlette, redis: Redis
) -> None:
    async with make_client(app) as laptop, make_client(app) as phone:
        await signup(laptop)
        await login(phone)
        before = laptop.cookies["__Host-sid"]
        r = await laptop.post("/account/password", data=change())
        assert r.status_code == 303 and r.headers["location"] == "/account/password"
        assert laptop.cookies["__Host-sid"] != before
        assert len(session_keys(redis)) == 1
        page = await laptop.get("/account/password")
        assert "Your password was changed" in page.text  # carried by the session, shown once
        assert "Your password was changed" not in (await laptop.get("/account/password")).text
        assert (await phone.get("/")).status_code == 303
        assert (await laptop.get("/")).status_code == 200
    async with make_client(app) as fresh:
        assert (await login(fresh)).status_code == 401
        assert (await login(fresh, password=NEW_PASSWORD)).status_code == 303


async def test_password_change_with_htmx_shows_the_notice_inline(client: httpx.AsyncClient) -> None:
    await signup(client)
    r = await client.post("/account/password", data=change(), headers=HX)
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<form id="password-form"')
    assert "Your password was changed" in r.text
    assert "set-cookie" in r.headers  # the id was rotated


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        (change(old="not my password"), 401, "That is not your current password."),
        (change(new="short"), 422, "Use at least 12 characters."),
        (change(new="password1234"), 422, "most common"),
        (change(new=PASSWORD), 422, "different from the current one"),
        ({"current_password": "", "new_password": ""}, 422, "Enter your current password."),
    ],
)
async def test_password_change_errors_swap_inline(
    client: httpx.AsyncClient, redis: Redis, form: dict[str, str], status: int, message: str
) -> None:
    await signup(client)
    cookie = client.cookies["__Host-sid"]
    r = await client.post("/account/password", data=form, headers=HX)
    assert r.status_code == status
    assert message in r.text
    assert r.text.lstrip().startswith('<form id="password-form"')
    assert client.cookies["__Host-sid"] == cookie
    assert (await login(make_client(client._transport.app))).status_code == 303  # type: ignore[attr-defined]
    assert PASSWORD not in r.text


async def test_password_page_needs_a_session(client: httpx.AsyncClient) -> None:
    assert (await client.get("/account/password")).headers["location"] == "/login"
    r = await client.post("/account/password", data=change())
    assert r.status_code == 303 and r.headers["location"] == "/login"


# -- throttling -----------------------------------------------------------------------------


async def fail(
    client: httpx.AsyncClient, times: int, email: str = "ada@example.com", **headers: str
) -> list[int]:
    return [
        (await login(client, email=email, password="wrong guess", headers=headers)).status_code
        for _ in range(times)
    ]


async def test_eleventh_bad_login_is_429_even_with_the_right_password(app: Starlette) -> None:
    async with make_client(app) as ada, make_client(app) as attacker, make_client(app) as grace:
        await signup(ada)
        await signup(grace, email="grace@example.com")
        grace.cookies.clear()
        assert await fail(attacker, 10) == [401] * 10
        right = await login(attacker)
        wrong = await login(attacker, password="still guessing")
        for r in (right, wrong):
            assert r.status_code == 429
            assert 0 < int(r.headers["retry-after"]) <= 900
            assert "Too many attempts" in r.text
            assert "set-cookie" not in r.headers
        # Whether the password was right is not revealed.
        assert right.text == wrong.text
        # The same address can still sign in to another account.
        assert (await login(grace, email="grace@example.com")).status_code == 303
        hx = await login(attacker, headers=HX)
        assert hx.status_code == 429 and hx.text.lstrip().startswith("<form")


async def test_success_clears_the_account_counter(client: httpx.AsyncClient) -> None:
    await signup(client)
    client.cookies.clear()
    assert await fail(client, 9) == [401] * 9
    assert (await login(client)).status_code == 303
    client.cookies.clear()
    assert await fail(client, 9) == [401] * 9
    assert (await login(client)).status_code == 303


async def test_lockouts_grow_on_repeat(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    client.cookies.clear()
    throttle = app.state.services.throttle
    await fail(client, 10)
    first = int((await login(client)).headers["retry-after"])
    throttle.clock = lambda: time.time() + first + 1  # the first lockout is over
    assert (await fail(client, 10))[-1] == 401
    second = int((await login(client)).headers["retry-after"])
    assert 900 < first * 2 - 5 <= second <= first * 2


async def test_unknown_accounts_are_throttled_alike(client: httpx.AsyncClient) -> None:
    assert await fail(client, 10, email="nobody@example.com") == [401] * 10
    assert (await login(client, email="nobody@example.com")).status_code == 429


@pytest.fixture
async def proxied_app(settings: Settings) -> AsyncIterator[Starlette]:
    proxy = (ipaddress.ip_network("127.0.0.1/32"),)
    async with running(settings, trusted_proxies=proxy, login_ip_max_failures=5) as app:
        yield app


async def test_per_ip_limit_uses_forwarded_for_only_from_trusted_proxies(proxied_app: Starlette) -> None:
    office = {"X-Forwarded-For": "198.51.100.7"}
    async with make_client(proxied_app) as c:
        await signup(c)
        c.cookies.clear()
        for i in range(5):  # different accounts, one address
            await login(c, email=f"user{i}@example.com", password="wrong", headers=office)
        r = await login(c, headers=office)
        assert r.status_code == 429
        # Another client address behind the same proxy is not affected.
        assert (await login(c, headers={"X-Forwarded-For": "203.0.113.5"})).status_code == 303


async def test_forwarded_for_is_ignored_without_trusted_proxies(app: Starlette, redis: Redis) -> None:
    async with make_client(app) as c:
        await login(c, email="x@example.com", password="wrong", headers={"X-Forwarded-For": "198.51.100.7"})
    assert redis.exists("t:i:127.0.0.1") and not redis.exists("t:i:198.51.100.7")


async def test_password_change_is_throttled_like_login(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    for _ in range(10):
        r = await client.post("/account/password", data=change(old="wrong guess"))
        assert r.status_code == 401
    r = await client.post("/account/password", data=change())
    assert r.status_code == 429 and "retry-after" in r.headers
    async with make_client(app) as other:
        assert (await login(other)).status_code == 429  # one counter per account


# -- change name ------------------------------------------------------------------------------


async def test_new_name_reaches_every_session_without_a_database_read(app: Starlette, redis: Redis) -> None:
    async with make_client(app) as laptop, make_client(app) as phone:
        await signup(laptop)
        await login(phone)
        r = await laptop.post("/account/profile", data={"first_name": "Augusta Ada", "last_name": "King"})
        assert r.status_code == 303 and r.headers["location"] == "/account/profile"
        assert "Your name was changed" in (await laptop.get("/account/profile")).text
        assert all(redis.hget(k, "n") == "Augusta Ada King" for k in session_keys(redis))
        assert "Hello, Augusta Ada King" in (await phone.get("/")).text
        hx = await phone.post("/account/profile", data={"first_name": "Ada", "last_name": "King"}, headers=HX)
        assert hx.text.lstrip().startswith('<form id="profile-form"')
        assert 'id="navbar" class="navbar" hx-swap-oob="true"' in hx.text and "Ada King" in hx.text
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None and (user.first_name, user.last_name) == ("Ada", "King")


async def test_bad_name_is_422_and_changes_nothing(client: httpx.AsyncClient, redis: Redis) -> None:
    await signup(client)
    r = await client.post("/account/profile", data={"first_name": "", "last_name": "x" * 101}, headers=HX)
    assert r.status_code == 422
    assert "Enter your first name." in r.text and "Use at most 100 characters." in r.text
    assert redis.hget(session_keys(redis)[0], "n") == "Ada Lovelace"


async def test_profile_needs_a_session(client: httpx.AsyncClient) -> None:
    assert (await client.get("/account/profile")).headers["location"] == "/login"
    r = await client.post("/account/profile", data={"first_name": "A", "last_name": "B"})
    assert r.headers["location"] == "/login"
