"""Re-authentication (sudo mode): prove it is still you before a sensitive change.

With htmx, a stale request gets a dialog in the page (web/guard.py); on success the browser
replays the request it had sent, with what the user typed (static/app.js). Without
JavaScript, GET /reauth?next=<path> and back.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from web import twofactor
from web.accounts import check_password, current_user
from web.audit import audit
from web.auth.passkeys import PasskeyError
from web.auth.users import User
from web.forms import read_form, throttled
from web.guard import SignedIn, local_path, signed_in, ways
from web.htmx import is_htmx, json_reply, redirect_to
from web.security import client_ip
from web.services import services
from web.templating import render

PAGE = "pages/reauth.html"
WRONG = "That is not right. Try again."


def _page(request: Request, user: User, *, status: int = 200, message: str | None = None) -> Response:
    block = "dialog" if is_htmx(request) else None
    context = {"next": local_path(request.query_params.get("next")), "message": message, **ways(user)}
    return render(request, PAGE, context, block=block, status=status)


@signed_in
async def reauth_page(request: Request, me: SignedIn) -> Response:
    return _page(request, await current_user(me))


async def _done(request: Request, me: SignedIn, how: str, next_path: str) -> Response:
    await me.session.reauthenticated()
    audit("reauth_success", ip=client_ip(request), user_id=me.user.id, method=how)
    if is_htmx(request):
        # The dialog closes and app.js sends again the request that asked for this.
        return Response(
            status_code=204, headers={"HX-Trigger": "reauthenticated", "Cache-Control": "no-store"}
        )
    return redirect_to(request, next_path)


@signed_in
async def reauth(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    values = await read_form(request, "password", "code", "next")
    next_path = local_path(values["next"])
    if values["code"]:
        # Codes count on the same counter as wrong passwords here (web/accounts.py).
        svc = services(request)
        limits = svc.throttle.password_change(me.session.digest or "")
        if wait := await svc.throttle.reserve(limits):
            message, _ = throttled(wait)
            return _page(request, user, status=429, message=message)
        how = await twofactor.check_code(request, user, values["code"])
        await svc.throttle.settle(limits, ok=how is not None)
        if how is not None:
            return await _done(request, me, how, next_path)
    elif values["password"]:
        checked = await check_password(request, user, values["password"], event="reauth_failure")
        if checked is True:
            return await _done(request, me, "password", next_path)
        if checked is not False:
            message, _ = throttled(checked)
            return _page(request, user, status=429, message=message)
    audit("reauth_failure", ip=client_ip(request), user_id=me.user.id, level=logging.WARNING)
    return _page(request, user, status=401, message=WRONG)


@signed_in
async def passkey_options(request: Request, me: SignedIn) -> Response:
    try:
        options = await twofactor.sign_in_options(request, me.session, purpose="reauth")
    except PasskeyError as exc:
        return json_reply({"error": str(exc)}, 400)
    return Response(options, media_type="application/json", headers={"Cache-Control": "no-store"})


@signed_in
async def passkey(request: Request, me: SignedIn) -> Response:
    values = await read_form(request, "credential", "next")
    try:
        user, _ = await twofactor.authenticate(request, me.session, values["credential"], purpose="reauth")
    except PasskeyError as exc:
        audit(
            "reauth_failure",
            ip=client_ip(request),
            user_id=me.user.id,
            level=logging.WARNING,
            reason=exc.reason,
        )
        return json_reply({"error": str(exc)}, 401)
    if str(user.id) != me.user.id:
        return json_reply({"error": "That passkey is for another account."}, 401)
    await me.session.reauthenticated()
    audit("reauth_success", ip=client_ip(request), user_id=me.user.id, method="passkey")
    return json_reply({"location": local_path(values["next"])}, headers={"HX-Trigger": "reauthenticated"})
