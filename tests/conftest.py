"""Real servers for the tests: a redis-server, a SecantusDB (MongoDB protocol) and an SMTP server."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette

from web.app import create_app
from web.embedded import Server, start_mongo, start_redis
from web.mail.catcher import start_mail_catcher
from web.sessions.store import session_key
from web.settings import Settings

SECRET = "test-secret-key-0123456789abcdef0123456789"
PASSWORD = "correct horse battery staple"
BASE_URL = "https://testserver"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_redis(log_path=tmp_path_factory.mktemp("redis") / "redis.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mongo(log_path=tmp_path_factory.mktemp("mongo") / "mongo.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mail_catcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An SMTP server (the development catcher) for apps started as processes: their SMTP_URL."""
    folder = tmp_path_factory.mktemp("mail")
    server = start_mail_catcher(folder / "maildir", log_path=folder / "catcher.log")
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: Server) -> Iterator[Redis]:
    """A synchronous client for looking at what the app stored; the database starts empty."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server: Server, mongo_server: Server, redis: Redis) -> Settings:
    # A database of its own per test, so no test sees another's users.
    mongodb_url = re.sub(r"/app$", f"/t{uuid.uuid4().hex[:12]}", mongo_server.url)
    return Settings(
        redis_url=redis_server.url,
        mongodb_url=mongodb_url,
        secret_keys=(SECRET.encode(),),
        bcrypt_rounds=4,
    )


@asynccontextmanager
async def running(settings: Settings, **changes: Any) -> AsyncIterator[Starlette]:
    """The app on these settings (with `changes`), started and stopped around the block."""
    application = create_app(dataclasses.replace(settings, **changes))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    async with running(settings) as application:
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


def make_client(app: Starlette, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, **kwargs)


HX = {"HX-Request": "true"}


async def signup(
    client: httpx.AsyncClient,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    first: str = "Ada",
    last: str = "Lovelace",
    **headers: str,
) -> httpx.Response:
    return await client.post(
        "/signup",
        data={"first_name": first, "last_name": last, "email": email, "password": password},
        headers=headers or None,
    )


async def login(
    client: httpx.AsyncClient,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post("/login", data={"email": email, "password": password}, headers=headers)


def set_session_cookie(client: httpx.AsyncClient, value: str) -> None:
    """Put a session cookie in the jar as the server would have (host-only, for testserver)."""
    client.cookies.clear()
    client.cookies.set("__Host-sid", value, domain="testserver.local")


def session_keys(redis: Redis) -> list[str]:
    """Every session's key in Redis, whoever it belongs to."""
    return sorted(redis.scan_iter(session_key("*")))


def form_post_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ASGI scope of a same-origin form POST to the test server, for driving the app by hand
    (a body that comes late, or never)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"sec-fetch-site", b"same-origin"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
    }
