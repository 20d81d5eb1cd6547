"""Security notices and account mails: what is sent, to whom, with which links.

Every link is PUBLIC_URL plus a path from the route table; tokens are issued here and
mailed, never shown on a page or stored in clear.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from web.audit import audit
from web.auth.users import User
from web.security import client_ip
from web.services import services
from web.sessions.agent import browser_label
from web.urls import path_for

REPORT_TTL = 7 * 86400  # how long a "this wasn't me" link works


def _when() -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime())


def _where(request: Request) -> dict[str, str]:
    return {"browser": browser_label(request.headers.get("user-agent", "")), "ip": client_ip(request)}


def greeting(user: User, to: str) -> str:
    """The name to greet by: only in mail to an address the account has confirmed. Whoever made
    an account may not own its address, and must not get their own words (a name can be "your
    account is suspended, go to ...") mailed from this site to its owner."""
    return user.first_name if user.email_verified_at is not None and to == user.email else ""


def _link(request: Request, route: str, **params: str) -> str:
    return services(request).mail.link(path_for(request, route, **params))


async def _notice(
    request: Request, user: User, template: str, *, to: str | None = None, **context: Any
) -> None:
    """A security notice: to the account's address (or `to`), saying when, from which browser
    and address, with a link to reset the password if it was not the owner. Only to an address
    the account has confirmed: until then it may be a stranger's, and whoever made the account
    could send them mail after mail (sign-ins, change requests naming any text as the new address)."""
    if user.email_verified_at is None:
        return
    to = to or user.email
    await services(request).mail.send(
        to,
        template,
        name=greeting(user, to),
        when=_when(),
        reset_link=_link(request, "forgot_password"),
        **_where(request),
        **context,
    )


async def password_reset(request: Request, user: User, *, version: int) -> None:
    """Mail a reset link, valid until used, expired, or the credentials change (version)."""
    svc = services(request)
    ttl = svc.settings.password_reset_ttl
    token = await svc.tokens.issue("reset", str(user.id), ttl=ttl, version=version)
    await svc.mail.send(
        user.email,
        "password_reset",
        name=greeting(user, user.email),
        link=_link(request, "password_reset", token=token),
        minutes=ttl // 60,
    )


async def link_allowed(request: Request, user: User, address: str) -> int:
    """Take a place for a confirmation link to `address` (the account's own, or one it asks to move
    to); 0, or the seconds to wait once the address has had its links for the hour: it may be a
    stranger's, whom accounts could otherwise mail at will. Asked before verify_email()."""
    svc = services(request)
    change = address != user.email
    if wait := await svc.throttle.reserve(svc.throttle.verify_mail_to(address, change=change)):
        audit("verification_not_sent", ip=client_ip(request), user_id=str(user.id), change=change)
    return wait


async def verify_email(
    request: Request, user: User, address: str, *, version: int | None = None, epoch: int | None = None
) -> None:
    """Mail a confirmation link to `address`: the account's own, or (with the credential version and
    epoch it claimed) the new one it asked to change to. See link_allowed()."""
    svc = services(request)
    ttl = svc.settings.email_verify_ttl
    change = address != user.email
    data = {"email": address, "version": version, "epoch": epoch} if change else {"email": address}
    token = await svc.tokens.issue("verify", str(user.id), ttl=ttl, **data)
    await svc.mail.send(
        address,
        "verify_email",
        name=greeting(user, address),
        link=_link(request, "verify_email", token=token),
        hours=ttl // 3600,
        change=change,
    )
    audit("verification_sent", ip=client_ip(request), user_id=str(user.id), change=change)


async def password_changed(request: Request, user: User, *, how: str) -> None:
    await _notice(request, user, "password_changed", how=how)


async def email_changed(request: Request, user: User, old: str, new: str, *, done: bool) -> None:
    """Tell the old address that a change to `new` was asked for, or made."""
    await _notice(request, user, "email_changed", to=old, new_email=new, done=done)


async def new_browser(request: Request, user: User, session_digest: str) -> None:
    """A sign-in from a browser this account was never used on: say so, with a way out."""
    svc = services(request)
    token = await svc.tokens.issue("report", str(user.id), ttl=REPORT_TTL, session=session_digest)
    await _notice(request, user, "new_browser", report_link=_link(request, "report_session", token=token))
    audit("new_browser_notice_sent", ip=client_ip(request), user_id=str(user.id))


async def factors_changed(request: Request, user: User, what: str) -> None:
    """A second factor was added, removed or replaced: say which, and how to undo it."""
    await _notice(request, user, "factors_changed", what=what, security_link=_link(request, "security"))


async def recovery_code_used(request: Request, user: User, *, left: int) -> None:
    await _notice(request, user, "recovery_code_used", left=left, security_link=_link(request, "security"))
