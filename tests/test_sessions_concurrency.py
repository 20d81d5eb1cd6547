"""No lost updates: two requests that change different keys of one session both persist."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import SECRET
from web.redis import connect_redis
from web.sessions import SessionMiddleware, SessionStore, Signer, session_of
from web.settings import Settings

ROUNDS = 100
BARRIER_WAIT_S = 5.0
RACE = {"X-Race": "1"}


@pytest.fixture
async def inline_app(settings: Settings) -> AsyncIterator[tuple[Starlette, asyncio.Barrier]]:
    """A tiny app on the real session middleware, whose writers meet at a barrier after reading."""
    assert settings.redis_url
    client = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
    barrier = asyncio.Barrier(2)

    async def start(request: Request) -> Response:
        session = await session_of(request).load()
        session["started"] = True
        return Response("ok")

    async def write(request: Request) -> Response:
        session = await session_of(request).load()
        if "x-race" in request.headers:
            # Both requests hold the same old state before either writes. Bounded: should the
            # other request fail before it gets here, this one fails too rather than hang the run.
            async with asyncio.timeout(BARRIER_WAIT_S):
                await barrier.wait()
        if request.method == "DELETE":
            del session[request.path_params["key"]]
        else:
            session[request.path_params["key"]] = request.path_params["value"]
        return Response("ok")

    async def read(request: Request) -> Response:
        session = await session_of(request).load()
        return JSONResponse({k: session[k] for k in session})

    app = Starlette(
        routes=[
            Route("/start", start),
            Route("/data", read),
            Route("/data/{key}/{value}", write, methods=["PUT"]),
            Route("/data/{key}", write, methods=["DELETE"]),
        ]
    )
    store = SessionStore(client, idle_timeout=60, absolute_timeout=600)
    wrapped = SessionMiddleware(app, store=store, signer=Signer((SECRET.encode(),)), secure=True)
    yield wrapped, barrier  # type: ignore[misc]
    await client.aclose()


async def test_concurrent_writes_to_different_keys_all_land(
    inline_app: tuple[Starlette, asyncio.Barrier],
) -> None:
    app, _ = inline_app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c:
        await c.get("/start")
        for i in range(ROUNDS):
            await asyncio.gather(c.put(f"/data/a/{i}", headers=RACE), c.put(f"/data/b/{i}", headers=RACE))
            data = (await c.get("/data")).json()
            assert (data["a"], data["b"]) == (str(i), str(i)), f"lost an update in round {i}"


async def test_concurrent_delete_and_write_both_land(inline_app: tuple[Starlette, asyncio.Barrier]) -> None:
    app, _ = inline_app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c:
        await c.get("/start")
        for i in range(ROUNDS // 4):
            await c.put(f"/data/gone/{i}")
            await asyncio.gather(c.delete("/data/gone", headers=RACE), c.put(f"/data/kept/{i}", headers=RACE))
            data = (await c.get("/data")).json()
            assert "gone" not in data and data["kept"] == str(i)
