"""Sign-in and sign-out: generic failures, equal cost, rotation, destruction."""

from __future__ import annotations

import re

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette

from tests.conftest import HX, login, make_client, running, session_keys, set_session_cookie, signup
from web.auth.users import User
from web.services import Services
from web.sessions.store import index_key, session_key
from web.settings import Settings


def cookie_value(response: httpx.Response) -> str:
    match = re.search(r"__Host-sid=([^;]*)", response.headers.get("set-cookie", ""))
    assert match, response.headers
    return match.group(1)


async def test_login_success_redirects_home(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    async with make_client(app) as fresh:
        r = await login(fresh)
        assert r.status_code == 303
        assert r.headers["location"] == "/"
        assert "Ada Lovelace" in (await fresh.get("/")).text


async def test_login_with_htmx_uses_hx_redirect_on_a_200(client: httpx.AsyncClient) -> None:
    await signup(client)
    client.cookies.clear()
    r = await login(client, headers=HX)
    assert r.status_code == 200
    assert r.headers["hx-redirect"] == "/"


async def test_unknown_email_and_wrong_password_look_the_same(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    await signup(client)
    client.cookies.clear()
    wrong = await login(client, password="not the right password")
    unknown = await login(client, email="nobody@example.com", password="not the right password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Invalid email or password" in wrong.text
    # Identical but for the email typed back into the field.
    assert wrong.text.replace("ada@example.com", "X") == unknown.text.replace("nobody@example.com", "X")
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers


async def test_unknown_email_still_costs_one_bcrypt_check(
    client: httpx.AsyncClient, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    await signup(client)
    client.cookies.clear()
    passwords = app.state.services.passwords
    calls: list[str] = []
    real_run = passwords._run

    async def counting_run(fn, password, salt_or_hash):  # type: ignore[no-untyped-def]
        calls.append(fn.__name__)
        return await real_run(fn, password, salt_or_hash)

    monkeypatch.setattr(passwords, "_run", counting_run)
    await login(client, email="nobody@example.com", password="whatever it is")
    await login(client, password="whatever it is")
    assert calls == ["checkpw", "checkpw"]


async def test_htmx_failure_swaps_only_the_form(client: httpx.AsyncClient) -> None:
    r = await login(client, email="a@b.co", password="nope", headers=HX)
    assert r.status_code == 401
    assert r.text.lstrip().startswith("<form")
    assert "Invalid email or password" in r.text
    assert 'value="a@b.co"' in r.text


async def test_empty_fields_are_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/login", data={"email": "", "password": ""})
    assert r.status_code == 422
    assert "Enter your email address." in r.text


async def test_login_rotates_the_session_id(client: httpx.AsyncClient, redis: Redis) -> None:
    await signup(client)
    before = session_keys(redis)
    old_cookie = client.cookies.get("__Host-sid")
    r = await login(client)  # signing in again, on top of a live session
    assert r.status_code == 303
    assert cookie_value(r) != old_cookie
    after = session_keys(redis)
    assert len(after) == 1 and after != before  # the old key is gone, not just abandoned


async def test_anonymous_session_data_survives_login(app: Starlette, redis: Redis) -> None:
    await signup(make_client(app))
    svc: Services = app.state.services
    # A session made before sign-in (with data in it): login moves the data to the new id.
    from web.sessions.session import Session

    anon = Session(svc.store, None)
    await anon.load()
    anon["theme"] = "dark"
    await anon.commit()
    assert anon.id is not None
    async with make_client(app) as c:
        set_session_cookie(c, svc.signer.sign(anon.id))
        await login(c)
        new_id = svc.signer.unsign(c.cookies["__Host-sid"])
        assert new_id and new_id[0] != anon.id
        moved = Session(svc.store, new_id[0])
        await moved.load()
        assert moved["theme"] == "dark"
        assert moved.user is not None
    assert anon.digest is not None and redis.exists(session_key(anon.digest)) == 0


async def test_logout_destroys_the_session_and_a_replayed_cookie_is_anonymous(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await signup(client)
    stolen = client.cookies["__Host-sid"]
    r = await client.post("/logout")
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert session_keys(redis) == []
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    assert redis.zrange(index_key(str(user.id)), 0, -1) == []  # nor is it listed as one of hers
    set_session_cookie(client, stolen)
    replay = await client.get("/")
    assert replay.status_code == 303
    assert replay.headers["location"] == "/login"


async def test_htmx_logout_swaps_login_form_and_navbar(client: httpx.AsyncClient) -> None:
    await signup(client)
    r = await client.post("/logout", headers=HX)
    assert r.status_code == 200
    assert 'id="login-form"' in r.text
    assert 'id="navbar" class="navbar" hx-swap-oob="true"' in r.text
    assert "Ada Lovelace" not in r.text
    assert r.headers["hx-push-url"] == "/login"
    assert "Max-Age=0" in r.headers["set-cookie"]


async def test_get_logout_is_a_confirmation_page_that_changes_nothing(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    await signup(client)
    r = await client.get("/logout")
    assert r.status_code == 200
    assert 'hx-post="/logout"' in r.text
    assert "set-cookie" not in r.headers
    assert len(session_keys(redis)) == 1
    assert (await client.get("/")).status_code == 200


async def test_long_password_counts_every_byte(client: httpx.AsyncClient) -> None:
    """bcrypt reads 72 bytes; a password that differs only past them must still be wrong."""
    long = "é" * 40 + "tail-one"  # 88 bytes
    r = await signup(client, password=long)
    assert r.status_code == 303
    client.cookies.clear()
    assert (await login(client, password="é" * 40 + "tail-two")).status_code == 401
    assert (await login(client, password=long)).status_code == 303


async def test_stored_hash_with_old_rounds_is_upgraded_on_login(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    await signup(client)
    client.cookies.clear()
    svc: Services = app.state.services
    svc.passwords.rounds = 5
    assert (await login(client)).status_code == 303
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None and user.password_hash.startswith("$2b$05$")
    # The new hash is of the same password: it still signs in, and nothing else does.
    client.cookies.clear()
    assert (await login(client, password="not the right password")).status_code == 401
    assert (await login(client)).status_code == 303


async def test_the_blank_sign_in_page_is_rendered_once_per_app_and_only_when_blank(
    settings: Settings, redis: Redis
) -> None:
    """The empty sign-in form comes from memory after the first request: each app its own (their
    settings differ), and never when the page carries something of the visitor's."""
    async with (
        running(settings, remember_absolute_timeout=3 * 86400) as a,
        running(settings, remember_absolute_timeout=5 * 86400) as b,
    ):
        for app, days in ((a, "Up to 3 days"), (b, "Up to 5 days")):
            async with make_client(app) as visitor:
                first, again = (await visitor.get("/login")).text, (await visitor.get("/login")).text
                assert days in first and first == again
                fragment = await visitor.get("/login", headers=HX)
                assert days in fragment.text and "<html" not in fragment.text
                wrong = await login(visitor, password="not the password")
                assert wrong.status_code == 401 and "Invalid email or password" in wrong.text
        async with make_client(a) as ada:
            await signup(ada)
            assert (await ada.get("/login")).status_code == 303  # signed in: not the form at all
