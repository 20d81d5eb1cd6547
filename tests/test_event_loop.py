"""Nothing slow runs on the event loop: asyncio's debug mode reports every step over the bound."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from tests.conftest import HX, PASSWORD, login, make_client, running, signup
from web.settings import Settings

SLOW_S = 0.05  # a step of the loop that takes longer than this stalls every other request


async def test_no_slow_callbacks_while_signing_up_in_and_browsing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Real bcrypt cost: hashing must happen in worker threads, never on the loop.
    async with running(settings, bcrypt_rounds=12) as app:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_S
        caplog.set_level(logging.WARNING, logger="asyncio")
        try:
            async with make_client(app) as ada, make_client(app) as other:
                await asyncio.gather(signup(ada), signup(other, email="grace@example.com"))
                await asyncio.gather(
                    login(other, password="wrong password"),
                    ada.get("/"),
                    ada.get("/sessions"),
                    ada.get("/session"),
                )
                for path in ("/", "/sessions", "/account/password", "/session", "/login", "/signup"):
                    assert (await ada.get(path)).status_code in (200, 303)
                    await ada.get(path, headers=HX)
                await ada.post(
                    "/account/password",
                    data={"current_password": PASSWORD, "new_password": "a new passphrase here"},
                )
                await ada.post("/logout", headers=HX)
                await login(ada, password="a new passphrase here")
        finally:
            loop.set_debug(False)
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert slow == []


async def test_hashing_does_not_hold_up_page_views(client: httpx.AsyncClient) -> None:
    """While a login hashes, a page view on the same loop still answers."""
    await signup(client)
    svc = client._transport.app.state.services  # type: ignore[attr-defined]
    svc.passwords.rounds = 13
    hashing = asyncio.ensure_future(svc.passwords.hash("any password at all"))
    page = await client.get("/")
    assert page.status_code == 200
    assert not hashing.done()
    await hashing
