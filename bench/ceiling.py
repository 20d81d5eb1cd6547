"""The ceiling and the floor under it, each served like the app (`uvicorn --factory ...`).

create(): the signed-in home page from a bare route, with no middleware and no Redis. The
template, the Jinja environment and render() are the app's own; only the session is a
constant. It shows what rendering the page costs on its own, so the app's figure can be read
as a share of it.

minimal(): one tiny Jinja template, padded to the ceiling page's size (BENCH_PAGE_BYTES), from
a bare route: what any Starlette page of that size costs, so the ceiling can be read as a
share of that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from web.routes import routes
from web.sessions import SessionUser
from web.templating import compile_all, render

NAME = "Bench User 0"
TINY = jinja2.Environment(autoescape=True).from_string(
    '<!doctype html>\n<html lang="en"><head><title>Home</title></head>\n'
    "<body><h1>Hello, {{ name }}</h1><p>{{ padding }}</p></body></html>\n"
)


@dataclass(frozen=True)
class FixedSession:
    """What home.html and the navbar read from a session, fixed."""

    user: SessionUser
    loaded: bool = True
    expires_in: int = 1800
    idle_timeout: int = 1800
    absolute_expires_in: int = 28800
    warn_at: int = 60


# Unverified, as the benchmark's accounts are: their home page asks them to confirm their address.
SESSION = FixedSession(SessionUser(id="0" * 24, name=NAME, verified=False))


async def home(request: Request) -> Response:
    request.scope["session"] = SESSION
    return render(request, "pages/home.html", {"notice": None})


def create() -> Starlette:
    """Uvicorn factory. The app's other routes are kept only so that url_for() finds their names."""
    compile_all()
    others = [route for route in routes if getattr(route, "name", None) != "home"]
    return Starlette(routes=[Route("/", home, name="home"), *others])


def minimal() -> Starlette:
    """Uvicorn factory: the tiny page, its body BENCH_PAGE_BYTES long."""
    size = int(os.environ["BENCH_PAGE_BYTES"])
    padding = "x" * (size - len(TINY.render(name=NAME, padding="").encode()))
    if len(TINY.render(name=NAME, padding=padding).encode()) != size:
        raise SystemExit(f"BENCH_PAGE_BYTES={size} is smaller than the tiny page itself")

    async def page(request: Request) -> Response:
        return HTMLResponse(TINY.render(name=NAME, padding=padding))

    return Starlette(routes=[Route("/", page)])
