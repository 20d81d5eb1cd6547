"""`python -m bench.parts`: where a signed-in page's CPU goes, found by taking parts away.

The app and the ceiling (bench/ceiling.py) are driven in this process, straight through ASGI
(no uvicorn, no sockets but Redis's), by 16 concurrent callers. Each line is the process's
CPU time per request: the whole page, then with the session's Redis round trip answered from
memory, then also without the shell (metrics, security, errors: web/shell.py). What the page costs
beyond the ceiling is then shared out between Redis, the middlewares, and the rest (session,
cookie check, guard). The figures are for reading side by side, from one run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import uvloop
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message

from bench import ceiling
from web.embedded import start_mongo, start_redis
from web.mail.catcher import start_mail_catcher

ORIGIN = "http://localhost:8000"
CALLERS = 16
REQUESTS = 20_000


async def drive(app: ASGIApp, cookie: str, n: int) -> float:
    """CPU microseconds per request of n signed-in GET / (each must answer 200)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost:8000"), (b"user-agent", b"bench"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: set[int] = set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async def caller() -> None:
        for _ in range(n // CALLERS):
            await app({**scope, "state": {}}, receive, send)

    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    if statuses != {200}:
        raise RuntimeError(f"GET / answered {sorted(statuses)}")
    return (time.process_time() - started) / (n // CALLERS * CALLERS) * 1e6


async def measure(app: Starlette, ceiling_app: ASGIApp) -> list[tuple[str, float]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
        form = {"first_name": "Bench", "last_name": "User 0", "email": "parts@example.com"}
        reply = await client.post("/signup", data={**form, "password": "bench passphrase, long enough"})
        if reply.status_code != 303:
            raise RuntimeError(f"sign-up failed: {reply.status_code}")
        cookie = f"sid={reply.cookies['sid']}"

    async def cpu(target: ASGIApp) -> float:
        await drive(target, cookie, REQUESTS // 10)  # warm up
        return await drive(target, cookie, REQUESTS)

    def rebuilt(keep: Callable[[str], bool]) -> Starlette:
        app.user_middleware = [m for m in everything if keep(getattr(m.cls, "__name__", ""))]
        app.middleware_stack = None  # Starlette builds it again on the next call
        return app

    lines = [("ceiling (bench/ceiling.py)", await cpu(ceiling_app)), ("signed-in page", await cpu(app))]
    store = app.state.services.store
    real_load = store._load
    replies: dict[str, Any] = {}

    async def remembered(keys: list[str], args: list[Any]) -> Any:
        if keys[0] not in replies:
            replies[keys[0]] = await real_load(keys, args)
        return replies[keys[0]]

    everything = list(app.user_middleware)
    store._load = remembered
    try:
        lines.append(("  Redis answered from memory", await cpu(app)))
        lines.append(("    and no Shell", await cpu(rebuilt(lambda n: n != "Shell"))))
    finally:
        store._load = real_load
        rebuilt(lambda n: True)
    return lines


def main() -> int:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        redis_server = start_redis(log_path=logs / "redis.log")
        stack.callback(redis_server.stop)
        mongo_server = start_mongo(log_path=logs / "mongodb.log")
        stack.callback(mongo_server.stop, 1.0)
        mail = start_mail_catcher(logs / "mail", log_path=logs / "mail.log")
        stack.callback(mail.stop)
        os.environ.update(
            REDIS_URL=redis_server.url,
            MONGODB_URL=mongo_server.url,
            SMTP_URL=mail.url,
            PUBLIC_URL=ORIGIN,
            SECRET_KEY=secrets.token_urlsafe(40),
            COOKIE_SECURE="0",
            BCRYPT_ROUNDS="4",
            AUDIT_LOG_LEVEL="warning",
        )
        from web.app import from_env  # reads the settings above

        app = from_env()

        async def run() -> list[tuple[str, float]]:
            async with app.router.lifespan_context(app):
                return await measure(app, ceiling.create())

        lines = uvloop.run(run())
    page = lines[1][1]
    for name, us in lines:
        print(f"{name:38s} {us:6.1f} µs  {us / page:5.0%} of the page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
