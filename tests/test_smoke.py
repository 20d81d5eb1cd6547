from __future__ import annotations

import httpx

from tests.conftest import signup


async def test_signup_then_home(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 303, r.text
    r = await client.get("/login")
    assert r.status_code == 200
    r = await signup(client)
    assert r.status_code == 303, r.text
    r = await client.get("/")
    assert r.status_code == 200
    assert "Ada Lovelace" in r.text
