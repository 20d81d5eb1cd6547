"""The session as its owner sees it: the countdown's status and refresh, the list of sessions."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from web.accounts import end_sessions
from web.audit import audit
from web.auth.tokens import Token
from web.errors import LinkGone
from web.guard import SignedIn, reauth_expires_in, signed_in
from web.htmx import is_htmx, json_reply, redirect, wants_json
from web.security import client_ip
from web.services import services
from web.sessions import EXPIRED, Session, SessionInfo, session_of
from web.templating import render


def status(request: Request, session: Session, *, code: int = 200) -> Response:
    """The session's state as JSON, or as the countdown widget."""
    if wants_json(request):
        if not session.user:
            body: dict[str, object] = {"authenticated": False}
        else:
            body = {
                "authenticated": True,
                "expires_in": session.expires_in,
                "absolute_expires_in": session.absolute_expires_in,
                "idle_timeout": session.idle_timeout,
                "reauth_expires_in": reauth_expires_in(request, session),
                "remembered": session.remembered,
            }
        response: Response = json_reply(body, code)
    else:
        response = render(request, "base.html", block="countdown", status=code)
    response.headers.add_vary_header("Accept")
    return response


async def session_status(request: Request) -> Response:
    # touch=False: asking how long is left must not change the answer. Anonymous is an answer too.
    return status(request, await session_of(request).load(touch=False))


def _ended(request: Request, session: Session) -> Response:
    """The countdown (or JSON) says it is over; a plain form gets the error page."""
    if wants_json(request) or is_htmx(request):
        return status(request, session, code=401)
    raise HTTPException(401, f"{EXPIRED} Sign in again.")


# Loading with touch slides the idle window, still capped by the absolute deadline.
@signed_in(otherwise=_ended)
async def session_refresh(request: Request, me: SignedIn) -> Response:
    if not wants_json(request) and not is_htmx(request):
        return redirect(request, "home")
    return status(request, me.session)


# -- the sessions page: see every signed-in device, end any of them ---------------------------


@dataclass(frozen=True)
class Row:
    handle: str
    info: SessionInfo
    current: bool


def _list_page(request: Request, me: SignedIn, sessions: list[SessionInfo]) -> Response:
    signer = services(request).signer
    rows = [Row(signer.handle(s.digest), s, s.digest == me.session.digest) for s in sessions]
    rows.sort(key=lambda row: (not row.current, -row.info.last_seen, -row.info.created))
    block = "list" if is_htmx(request) else None
    return render(request, "pages/sessions.html", {"rows": rows}, block=block)


async def _sessions(request: Request, me: SignedIn) -> list[SessionInfo]:
    return await services(request).store.user_sessions(me.user.id)


@signed_in
async def sessions_page(request: Request, me: SignedIn) -> Response:
    return _list_page(request, me, await _sessions(request, me))


async def _after_revoke(request: Request, me: SignedIn) -> Response:
    if not is_htmx(request):
        return redirect(request, "sessions")
    return _list_page(request, me, await _sessions(request, me))


@signed_in(recent=True)
async def revoke(request: Request, me: SignedIn) -> Response:
    """End one session by its public handle. Idempotent: an unknown handle is already gone."""
    signer = services(request).signer
    handle = request.path_params["handle"]
    # A handle is base64url; compare_digest raises on a str that is not ASCII (and it names nothing).
    targets = [
        s.digest
        for s in await _sessions(request, me)
        if handle.isascii()
        and hmac.compare_digest(signer.handle(s.digest), handle)
        and s.digest != me.session.digest
    ]
    # The epoch too: what that session set in motion (a sign-in's second step, an address change
    # waiting for its link) ends with it.
    await end_sessions(
        request, me.user.id, only=targets, keep=me.session, reason="revoked", bump_epoch=bool(targets)
    )
    return await _after_revoke(request, me)


@signed_in(recent=True)
async def revoke_others(request: Request, me: SignedIn) -> Response:
    await end_sessions(request, me.user.id, keep=me.session, reason="revoked_others", bump_epoch=True)
    return await _after_revoke(request, me)


# -- "this wasn't me": the link in a new-browser notice ----------------------------------------

REPORTED = (
    "Done: that session and every other session of your account were signed out. "
    "If someone else knows your password, choose a new one now."
)
REPORT_GONE = "This link has expired or was already used."


async def _reported(request: Request) -> Token:
    token = await services(request).tokens.peek("report", request.path_params["token"])
    if token is None:
        raise LinkGone(REPORT_GONE, again="forgot_password")
    return token


async def report_page(request: Request) -> Response:
    """Asks first: a mail scanner fetching the link must not end anything."""
    await _reported(request)
    return render(request, "pages/report.html", {"done": False})


async def report(request: Request) -> Response:
    """End the reported session and every other one of the account, whoever is asking."""
    svc = services(request)
    token = await svc.tokens.consume("report", request.path_params["token"])
    if token is None:
        raise LinkGone(REPORT_GONE, again="forgot_password")
    # Everything, the reported session included, and sign-ins under way (the epoch).
    await end_sessions(request, token.user_id, reason="reported", bump_epoch=True)
    audit("session_reported", ip=client_ip(request), user_id=token.user_id)
    session = await session_of(request).load()
    if session.user and session.user.id == token.user_id:
        await session.destroy()  # this browser's session was one of them
    return render(request, "pages/report.html", {"done": True, "message": REPORTED})
