"""The one sign-in guard: a route declares that it needs a signed-in user (and, for sensitive
changes, a recent authentication), and this decides what everyone else gets: a 303 to the
sign-in page (or to /reauth), htmx's HX-Redirect (or the re-authentication dialog), a JSON 401."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, overload
from urllib.parse import quote, urlencode, urlsplit

from beanie import PydanticObjectId
from starlette.requests import Request
from starlette.responses import Response

from web.auth.users import User
from web.htmx import json_reply, redirect, redirect_to, wants_json
from web.security import SAFE_METHODS
from web.services import services
from web.sessions import Session, SessionUser, session_of
from web.templating import render
from web.urls import path_for


class SignedIn(NamedTuple):
    """Who is asking: the loaded session and its user (a tuple: one per signed-in request)."""

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
        return json_reply({"authenticated": False}, 401)
    return redirect(request, "login")


def local_path(raw: str | None) -> str:
    """`raw` if it is a path on this site, else "/": a `next` parameter must not lead elsewhere."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    if any(ord(c) < 32 or c == "\x7f" for c in raw):
        return "/"
    # Percent-encoded: an HX-Redirect header must be Latin-1, and "/€" is a path too.
    raw = quote(raw, safe="/?=&%#;:@!$'()*+,-._~")
    parts = urlsplit(raw)
    return raw if not parts.scheme and not parts.netloc else "/"


def reauth_expires_in(request: Request, session: Session) -> int:
    """Seconds left of sudo mode: how long ago the user last proved who they are, from the timeout."""
    timeout = services(request).settings.reauth_timeout
    return max(0, session.authenticated_at + timeout - int(time.time()))


def ways(user: User | None) -> dict[str, bool]:
    """Which ways to re-authenticate the dialog offers (a password always)."""
    return {"has_totp": bool(user and user.totp_secret), "has_passkeys": bool(user and user.passkeys)}


async def stale(request: Request, session: Session) -> Response:
    """A sensitive request from a session that authenticated too long ago: ask again."""
    if request.method == "GET":
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:  # back to the page the form was on (a POST body cannot be replayed without JS)
        here = path_for(request, "home")
        try:
            referer = urlsplit(request.headers.get("referer", ""))
        except ValueError:  # "http://[::1/x": not a URL, so not one of our pages
            referer = None
        if referer is not None and referer.netloc == request.headers.get("host", ""):
            here = referer.path
    next_path = local_path(here)
    location = path_for(request, "reauth") + "?" + urlencode({"next": next_path})
    if wants_json(request):
        return json_reply({"reauthenticate": True, "location": location}, 401)
    if request.headers.get("hx-request") == "true":
        user = await User.get(PydanticObjectId(session.user.id)) if session.user else None
        context = {"next": next_path, "message": None, **ways(user)}
        # X-Reauth: app.js keeps the request that got this, to send it again once it is done.
        headers = {"HX-Retarget": "#dialog", "HX-Reswap": "innerHTML", "X-Reauth": "1"}
        return render(request, "pages/reauth.html", context, block="dialog", status=401, headers=headers)
    return redirect_to(request, location)


@overload
def signed_in(handler: Handler, /) -> Endpoint: ...
@overload
def signed_in(
    *, touch: bool = True, recent: bool = False, otherwise: Fallback = anonymous
) -> Callable[[Handler], Endpoint]: ...


def signed_in(
    handler: Handler | None = None,
    /,
    *,
    touch: bool = True,
    recent: bool = False,
    otherwise: Fallback = anonymous,
) -> Endpoint | Callable[[Handler], Endpoint]:
    """Decorate a handler that needs a signed-in user: it gets `(request, SignedIn)`.

    recent=True: the user must have proved who they are within REAUTH_TIMEOUT (sudo mode).
    touch=False reads the session without sliding its idle window (polling, sign-out).
    """

    def decorate(inner: Handler) -> Endpoint:
        @functools.wraps(inner)
        async def endpoint(request: Request) -> Response:
            if request.method not in SAFE_METHODS:
                # The body first (cached for the handler): a client holding it back must not get
                # a session checked now and acted on seconds later, after it was ended.
                await request.body()
            session = await session_of(request).load(touch=touch)
            user = session.user
            if user is None:
                return otherwise(request, session)
            if recent and not reauth_expires_in(request, session):
                return await stale(request, session)
            try:
                return await inner(request, SignedIn(session, user))
            except SignedOut:
                return otherwise(request, session)

        return endpoint

    return decorate(handler) if handler is not None else decorate
