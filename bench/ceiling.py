"""The ceiling: the signed-in home page from a bare route, with no middleware and no Redis.

Served by the same uvicorn command line as the app (`uvicorn --factory bench.ceiling:create`),
it shows what rendering the page costs on its own, so the app's figure can be read as a share
of it. The template, the Jinja environment and render() are the app's own; only the session
is a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web.routes import routes
from web.sessions import SessionUser
from web.templating import compile_all, render


@dataclass(frozen=True)
class FakeSession:
    """What home.html and the navbar read from a session, fixed."""

    user: SessionUser
    loaded: bool = True
    expires_in: int = 1800
    idle_timeout: int = 1800
    absolute_expires_in: int = 28800


SESSION = FakeSession(SessionUser(id="0" * 24, name="Bench User 0"))


async def home(request: Request) -> Response:
    request.scope["session"] = SESSION
    return render(request, "pages/home.html")


def create() -> Starlette:
    """Uvicorn factory. The app's other routes are kept only so that url_for() finds their names."""
    compile_all()
    others = [route for route in routes if getattr(route, "name", None) != "home"]
    return Starlette(routes=[Route("/", home, name="home"), *others])
