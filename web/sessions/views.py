"""The session as its owner sees it: the countdown's status and refresh, the list of sessions."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from web.audit import audit
from web.htmx import is_htmx, redirect
from web.services import services
from web.sessions.middleware import session_of
from web.sessions.session import Session
from web.sessions.store import AGENT, CREATED, IP, SEEN, Record
from web.templating import render


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


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
            }
        response: Response = JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})
    else:
        response = render(request, "partials/countdown.html", status=code)
    response.headers.add_vary_header("Accept")
    return response


async def session_status(request: Request) -> Response:
    # touch=False: asking how long is left must not change the answer.
    return status(request, await session_of(request).load(touch=False))


async def session_refresh(request: Request) -> Response:
    # Loading with touch slides the idle window, still capped by the absolute deadline.
    session = await session_of(request).load(touch=True)
    if not session.user:
        if wants_json(request) or is_htmx(request):
            return status(request, session, code=401)
        raise HTTPException(401, "Your session has ended. Sign in again.")
    if not wants_json(request) and not is_htmx(request):
        return redirect(request, "/")
    return status(request, session)


# -- the sessions page: see every signed-in device, end any of them ---------------------------


@dataclass(frozen=True)
class Row:
    handle: str
    created: int
    seen: int
    ip: str
    agent: str
    current: bool


async def _listed(request: Request) -> tuple[Session, dict[str, Record]]:
    session = await session_of(request).load()
    if not session.user:
        raise SignInFirst
    return session, await services(request).store.user_sessions(session.user.id)


class SignInFirst(Exception):
    """The page needs a signed-in user; the handler answers with a redirect to /login."""


def _list_page(request: Request, session: Session, records: dict[str, Record]) -> Response:
    signer = services(request).signer
    rows = [
        Row(
            handle=signer.handle(digest),
            created=int(r.fields.get(CREATED, 0)),
            seen=int(r.fields.get(SEEN, 0)),
            ip=r.fields.get(IP, ""),
            agent=r.fields.get(AGENT, ""),
            current=digest == session.digest,
        )
        for digest, r in records.items()
    ]
    rows.sort(key=lambda row: (not row.current, -row.seen, -row.created))
    block = "list" if is_htmx(request) else None
    return render(request, "pages/sessions.html", {"rows": rows}, block=block)


async def sessions_page(request: Request) -> Response:
    try:
        session, records = await _listed(request)
    except SignInFirst:
        return redirect(request, "/login")
    return _list_page(request, session, records)


async def _revoke(request: Request, session: Session, records: dict[str, Record], digests: list[str]) -> None:
    svc = services(request)
    assert session.user is not None
    ip = request.client.host if request.client else None
    for digest in digests:
        await svc.store.delete(digest, session.user.id)
        records.pop(digest, None)
        audit(
            "session_revoked",
            ip=ip,
            user_id=session.user.id,
            session=svc.signer.handle(digest),
            by=svc.signer.handle(session.digest) if session.digest else None,
        )


async def revoke(request: Request) -> Response:
    """End one session by its public handle. Idempotent: an unknown handle is already gone."""
    try:
        session, records = await _listed(request)
    except SignInFirst:
        return redirect(request, "/login")
    signer = services(request).signer
    handle = request.path_params["handle"]
    # A handle is base64url; compare_digest raises on a str that is not ASCII (and it names nothing).
    targets = [
        d
        for d in records
        if handle.isascii() and hmac.compare_digest(signer.handle(d), handle) and d != session.digest
    ]
    await _revoke(request, session, records, targets)
    if not is_htmx(request):
        return redirect(request, str(request.url_for("sessions").path))
    return _list_page(request, session, records)


async def revoke_others(request: Request) -> Response:
    try:
        session, records = await _listed(request)
    except SignInFirst:
        return redirect(request, "/login")
    await _revoke(request, session, records, [d for d in records if d != session.digest])
    if not is_htmx(request):
        return redirect(request, str(request.url_for("sessions").path))
    return _list_page(request, session, records)
