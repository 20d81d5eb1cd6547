"""Nothing slow runs on the event loop: asyncio's debug mode reports every step over the bound."""

from __future__ import annotations

import asyncio
import gc
import logging

import httpx
import pytest

from tests.conftest import HX, PASSWORD, login, make_client, running, signup
from web.settings import Settings

SLOW_S = 0.05  # a step of the loop that takes longer than this stalls every other request
# What a signed-in user gets from each page (the sign-in and sign-up pages send her home).
PAGES = {"/": 200, "/sessions": 200, "/account/password": 200, "/session": 200, "/login": 303, "/signup": 303}


async def test_no_slow_callbacks_while_signing_up_in_and_browsing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Real bcrypt cost: hashing must happen in worker threads, never on the loop.
    async with running(settings, bcrypt_rounds=12) as app:
        # What came before in this process (hundreds of tests' apps and clients) is frozen out of
        # the garbage collector: a full collection over that heap once stalled a step here for
        # 0.44 s in CI. Whatever the app allocates from now on is still collected, and timed.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_S
        caplog.set_level(logging.WARNING, logger="asyncio")
        try:
            async with make_client(app) as ada, make_client(app) as other:
                # Every answer is checked: a 422 or a redirect to /login would skip the very
                # bcrypt work (and the page rendering) that this test watches the loop through.
                signed_up = await asyncio.gather(signup(ada), signup(other, email="grace@example.com"))
                assert [r.status_code for r in signed_up] == [303, 303]
                answers = await asyncio.gather(
                    login(other, password="wrong password"),
                    ada.get("/"),
                    ada.get("/sessions"),
                    ada.get("/session"),
                )
                assert [r.status_code for r in answers] == [401, 200, 200, 200]
                for path, status in PAGES.items():
                    assert (await ada.get(path)).status_code == status, path
                    assert (await ada.get(path, headers=HX)).status_code == 200, path
                changed = await ada.post(
                    "/account/password",
                    data={"current_password": PASSWORD, "new_password": "a new passphrase here"},
                )
                assert changed.status_code == 303
                assert (await ada.post("/logout", headers=HX)).status_code == 200
                assert (await login(ada, password="a new passphrase here")).status_code == 303
        finally:
            loop.set_debug(False)
            gc.unfreeze()
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
