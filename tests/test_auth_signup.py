"""Sign-up: validation, the unique email, the new session."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis import Redis

from tests.conftest import HX, PASSWORD, session_keys, signup
from web.auth.users import User


async def test_signup_signs_in_and_greets_by_name(client: httpx.AsyncClient, redis: Redis) -> None:
    r = await signup(client, first="Ada", last="Lovelace")
    assert r.status_code == 303
    assert r.headers["location"] == "/"
    assert "__Host-sid=" in r.headers["set-cookie"]
    home = await client.get("/")
    assert home.status_code == 200
    assert "Hello, Ada Lovelace" in home.text
    assert len(session_keys(redis)) == 1


async def test_signup_with_htmx_redirects_client_side(client: httpx.AsyncClient) -> None:
    r = await signup(client, **HX)
    assert r.status_code == 200
    assert r.headers["hx-redirect"] == "/"
    assert "location" not in r.headers


async def test_user_document_is_normalised_and_hashed(client: httpx.AsyncClient) -> None:
    await signup(client, email="  Ada@Example.COM ")
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    assert user.first_name == "Ada"
    assert user.password_hash.startswith("$2b$04$")
    assert PASSWORD not in user.password_hash


async def test_invalid_fields_get_422_with_messages_and_kept_values(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    r = await client.post(
        "/signup",
        data={"first_name": "", "last_name": "Hopper", "email": "not-an-email", "password": "short"},
    )
    assert r.status_code == 422
    assert 'id="first_name-error"' in r.text
    assert 'id="email-error"' in r.text
    assert "Use at least 12 characters." in r.text
    assert 'value="Hopper"' in r.text
    assert 'value="not-an-email"' in r.text
    assert "short" not in r.text.replace("shortcut", "")  # the password is never echoed
    assert 'aria-invalid="true"' in r.text
    assert 'aria-describedby="email-error"' in r.text
    assert r.headers["cache-control"] == "no-store"
    assert "set-cookie" not in r.headers
    assert session_keys(redis) == []
    assert await User.count() == 0


async def test_invalid_fields_with_htmx_return_only_the_form(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/signup",
        data={"first_name": "Grace", "last_name": "", "email": "grace@example.com", "password": PASSWORD},
        headers=HX,
    )
    assert r.status_code == 422
    assert r.text.lstrip().startswith("<form")
    assert "<html" not in r.text
    assert 'value="Grace"' in r.text
    assert "Enter your last name." in r.text
    assert 'hx-swap-oob="innerHTML"' in r.text  # announced to screen readers
    assert "HX-Request" in r.headers["vary"]


async def test_common_password_is_refused(client: httpx.AsyncClient) -> None:
    r = await signup(client, password="qwertyuiop123")
    assert r.status_code == 422
    assert "most common" in r.text


async def test_email_as_password_is_refused(client: httpx.AsyncClient) -> None:
    r = await signup(client, email="someone.long@example.com", password="someone.long@example.com")
    assert r.status_code == 422


async def test_taken_email_is_409_and_keeps_the_first_account(client: httpx.AsyncClient) -> None:
    assert (await signup(client)).status_code == 303
    async with httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url)) as other:
        r = await signup(other, email="ADA@example.com", first="Eve")
    assert r.status_code == 409
    assert "already exists" in r.text
    assert await User.count() == 1


async def test_concurrent_signups_with_one_email_make_one_account(client: httpx.AsyncClient) -> None:
    transport = client._transport

    async def attempt(i: int) -> int:
        async with httpx.AsyncClient(transport=transport, base_url=str(client.base_url)) as c:
            return (await signup(c, first=f"Twin{i}")).status_code

    codes = await asyncio.gather(*(attempt(i) for i in range(20)))
    # One account; every other attempt told the address is taken, or (past the limit on
    # "taken" answers for one address, see test_auth_limits) to wait.
    assert sorted(codes)[0] == 303 and set(sorted(codes)[1:]) <= {409, 429}
    assert codes.count(409) >= 5
    assert await User.find({"email": "ada@example.com"}).count() == 1


async def test_operator_shaped_field_is_422_not_a_query(client: httpx.AsyncClient) -> None:
    await signup(client)
    async with httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url)) as attacker:
        r = await attacker.post("/login", data={"email[$ne]": "x", "password": PASSWORD})
        assert r.status_code == 422
        assert "set-cookie" not in r.headers
        r = await attacker.post(
            "/signup", data={"email[$ne]": "x", "first_name": "a", "last_name": "b", "password": PASSWORD}
        )
        assert r.status_code == 422
    assert await User.count() == 1


async def test_repeated_field_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/login",
        content=b"email=a%40b.c&email=x&password=p",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 422


async def test_signed_in_user_is_sent_home_from_the_forms(client: httpx.AsyncClient) -> None:
    await signup(client)
    for path in ("/login", "/signup"):
        r = await client.get(path)
        assert r.status_code == 303
        assert r.headers["location"] == "/"


@pytest.mark.parametrize(
    "name",
    [
        "Bob\u202eevil",  # right-to-left override: reorders what a page or mail shows
        "\u200b",  # zero-width space: a name that looks empty
        "A\u200b",  # ... or like another one
        "\u2066Eve\u2069",  # isolates
        "Eve\U000e0041",  # a tag character
        "\ue000",  # private use
        "\u0301\u0301",  # combining marks alone: nothing to read
    ],
)
async def test_names_with_invisible_or_reordering_characters_are_refused(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await signup(client, first=name)
    assert r.status_code == 422
    assert await User.find_one({"email": "ada@example.com"}) is None


@pytest.mark.parametrize("name", ["Mehr\u200cdad", "\U0001f469\u200d\U0001f4bb Ada", "Zoë", "O'Brien-Smith"])
async def test_names_that_need_joiners_or_marks_are_kept(client: httpx.AsyncClient, name: str) -> None:
    """Joiners shape Persian and Indic names, and emoji sequences."""
    assert (await signup(client, first=name)).status_code == 303
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None and user.first_name == name
