"""Account operations the views share: who the user is, signing in, ending sessions.

Views call these; these call the session store, the user documents and the audit log.
"""

from __future__ import annotations

import contextlib
import logging

from beanie import PydanticObjectId
from bson.errors import InvalidId
from starlette.requests import Request

from web import metrics
from web.audit import audit
from web.auth.users import User
from web.guard import SignedIn, SignedOut
from web.security import client_ip, client_network
from web.services import Services, services
from web.sessions import Session, SessionUser, session_of
from web.sessions.agent import browser_code

# Unknown addresses look up this id, so they cost the same reads as known ones.
NOBODY = "000000000000000000000000"


def handle(svc: Services, session: Session) -> str | None:
    """The session's public name in logs and URLs."""
    return svc.signer.handle(session.digest) if session.digest else None


async def current_user(me: SignedIn) -> User:
    """The signed-in user's document; if the account is gone, so is the session (SignedOut)."""
    try:
        user = await User.get(PydanticObjectId(me.user.id))
    except InvalidId:
        user = None
    if user is None:
        await me.session.destroy()
        raise SignedOut
    return user


async def sign_in(
    request: Request, session: Session, user: User, *, epoch: int, event: str, remember: bool = False
) -> None:
    """Put the user in this session under a fresh id; raises StaleCredentials if `epoch` is old."""
    svc = services(request)
    agent = browser_code(request.headers.get("user-agent", ""))
    ip = client_ip(request)
    signed = SessionUser(str(user.id), user.display_name, verified=user.email_verified_at is not None)
    await session.login(signed, ip=ip, agent=agent, epoch=epoch, remember=remember)
    audit(event, ip=ip, user_id=str(user.id), session=handle(svc, session))
    metrics.session_created(event)


async def end_sessions(
    request: Request,
    user_id: str,
    *,
    reason: str,
    keep: Session | None = None,
    only: list[str] | None = None,
    bump_epoch: bool = False,
    forget: bool = False,
) -> int:
    """End the user's sessions (`only` these digests, else all but `keep`), one audit line each;
    return the user's credential epoch.

    bump_epoch also voids sign-ins in flight: use it whenever credentials change.
    """
    svc = services(request)
    if only is not None and not only:
        return await svc.store.epoch(user_id)
    epoch, ended = await svc.store.end(
        user_id, only=only or (), keep=keep.digest if keep else None, bump_epoch=bump_epoch, forget=forget
    )
    by = handle(svc, keep) if keep else None
    for digest in ended:
        audit(
            "session_revoked",
            ip=client_ip(request),
            user_id=user_id,
            session=svc.signer.handle(digest),
            by=by,
            reason=reason,
        )
    metrics.session_ended(reason, len(ended))
    return epoch


async def mark_verified(request: Request, user: User) -> None:
    """The user's address is confirmed: in the document, and in every session (no more notice)."""
    await user.mark_verified()
    await services(request).store.verified(str(user.id))


async def check_password(request: Request, user: User, password: str, *, event: str) -> int | bool:
    """The signed-in user's password, checked under its own counter (not the sign-in lock):
    True if right, False if wrong (counted here and against sign-ins from this address),
    or the seconds to wait when throttled. `event` names the audit line of a failure."""
    svc = services(request)
    ip = client_ip(request)
    limits = svc.throttle.password_change(session_of(request).digest or "")
    if wait := await svc.throttle.reserve(limits):
        audit("login_throttled", ip=ip, user_id=str(user.id), level=logging.WARNING, retry_after=wait)
        return wait
    try:
        right = await svc.passwords.verify(password, user.password_hash)
    except BaseException:
        with contextlib.suppress(Exception):
            await svc.throttle.release(limits)
        raise
    await svc.throttle.settle(limits, ok=right)
    if not right:
        # A wrong guess here is a guess at the password: it counts against sign-ins from this
        # address too (not against the owner's known browsers).
        await svc.throttle.count_failure(svc.throttle.sign_in(user.email, client_network(ip), None))
        audit(event, ip=ip, user_id=str(user.id), level=logging.WARNING)
    return right
