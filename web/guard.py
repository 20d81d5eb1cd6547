"""The one sign-in guard: a route declares that it needs a signed-in user, and this decides
what everyone else gets (a 303 to the sign-in page, htmx's HX-Redirect, or a JSON 401)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import overload

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from web.htmx import redirect, wants_json
from web.sessions import Session, SessionUser, session_of


@dataclass(frozen=True)
class SignedIn:
    """Who is asking: the loaded session and its user."""

    session: Session
    user: SessionUser


class SignedOut(Exception):
    """Raised by a handler that finds the session no longer stands for anyone (account gone)."""


Handler = Callable[[Request, SignedIn], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
Fallback = Callable[[Request, Session], Response]


def anonymous(request: Request, session: Session) -> Response:
    """What a visitor who is not signed in gets from a page that needs it."""
    if wants_json(request):
        return JSONResponse({"authenticated": False}, 401, headers={"Cache-Control": "no-store"})
    return redirect(request, "login")


@overload
def signed_in(handler: Handler, /) -> Endpoint: ...
@overload
def signed_in(*, touch: bool = True, otherwise: Fallback = anonymous) -> Callable[[Handler], Endpoint]: ...


def signed_in(
    handler: Handler | None = None, /, *, touch: bool = True, otherwise: Fallback = anonymous
) -> Endpoint | Callable[[Handler], Endpoint]:
    """Decorate a handler that needs a signed-in user: it gets `(request, SignedIn)`.

    touch=False reads the session without sliding its idle window (polling, sign-out).
    """

    def decorate(inner: Handler) -> Endpoint:
        @functools.wraps(inner)
        async def endpoint(request: Request) -> Response:
            session = await session_of(request).load(touch=touch)
            user = session.user
            if user is None:
                return otherwise(request, session)
            try:
                return await inner(request, SignedIn(session, user))
            except SignedOut:
                return otherwise(request, session)

        return endpoint

    return decorate(handler) if handler is not None else decorate
