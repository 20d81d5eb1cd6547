"""Deleting an account, and everything that names it.

The steps are ordered so that a failure half-way (Redis or MongoDB away) never leaves a
signed-in session for a deleted account, and leaves the owner a way to try again:

0. The credential version is claimed, while this session lives: a request held since before a
   password change, a reset or the end of its session deletes nothing.
1. Every other session ends and the epoch moves on: no sign-in under way can finish.
2. Redis: outstanding tokens; queued mail to the address (but the goodbye notice, queued
   first); the sign-in throttling of the account. MongoDB: the account's activity.
   (A failure up to here leaves this session: the owner asks again.)
3. Redis, in one script: every session of the account, this one included, and the index; the
   epoch moves on again and stays 15 minutes as a tombstone (deleted, it would read 0 again,
   which a sign-in under way may have read before). From here on a failure leaves no session:
   the owner signs in again.
4. MongoDB: the account itself (its address is free again).
5. Redis, the same script again: a session that a sign-in racing steps 3 and 4 made, and a
   last bump for a sign-in that read the epoch between them. Then the activity once more.

Every step can run again: a retry finishes the job.
"""

from __future__ import annotations

from starlette.requests import Request

from web import activity, notices
from web.accounts import end_sessions
from web.audit import audit
from web.auth.users import User
from web.services import services
from web.sessions import Session


async def delete_account(request: Request, session: Session, user: User, *, version: int) -> bool:
    """Delete the account, if its credentials are still at `version` (read before the request's
    checks) and `session` is still alive; False (nothing done) if not."""
    svc = services(request)
    user_id, email = str(user.id), user.email
    if await svc.store.claim(user_id, version, session=session.digest) is None:
        return False
    await end_sessions(request, user_id, keep=session, reason="deleted", bump_epoch=True)
    # Only to a confirmed address: one nobody confirmed may be a stranger's (made, deleted, made again).
    kept = (
        (await svc.mail.send(email, "goodbye", name=notices.greeting(user, email)),)
        if user.email_verified_at
        else ()
    )
    await svc.mail.forget(email, keep=kept)
    await svc.tokens.delete_all(user_id)
    await svc.throttle.forget(email, user_id)
    await forget_activity(request, user_id)
    await end_sessions(request, user_id, reason="deleted", forget=True)
    await session.destroy()
    await user.delete()
    await end_sessions(request, user_id, reason="deleted", forget=True)
    # Again: events of requests that were under way (a failed sign-in, say) may have come since.
    await forget_activity(request, user_id)
    audit("account_deleted", ip=None, user_id=user_id)
    return True


async def forget_activity(request: Request, user_id: str) -> None:
    await services(request).activity.flush()  # events still queued for the account land first
    await activity.forget(user_id)
