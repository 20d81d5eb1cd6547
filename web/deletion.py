"""Deleting an account, and everything that names it.

The steps are ordered so that a failure half-way (Redis or MongoDB away) leaves the user's
own session alive to try again, and never a signed-in session for a deleted account:

1. Every other session ends and the epoch moves on: no sign-in under way can finish.
2. Redis: outstanding tokens; queued mail to the address (but the goodbye notice, queued
   first); the sign-in throttling of the account.
3. MongoDB: the account's activity, then the account itself (its address is free again).
4. Redis: every session of the account, this one included (a sign-in that raced step 3
   ends here too), then the index and the epoch.

Running it again after any failure finishes the job: every step is idempotent, and step 4
alone runs when the document is already gone.
"""

from __future__ import annotations

from starlette.requests import Request

from web import activity
from web.accounts import end_sessions
from web.audit import audit
from web.auth.users import User
from web.services import services
from web.sessions import Session


async def delete_account(
    request: Request, session: Session, user_id: str, email: str, user: User | None
) -> None:
    """Delete the account `user_id` (`user` is None once its document is gone)."""
    svc = services(request)
    if user is not None:
        await end_sessions(request, user_id, keep=session, reason="deleted", bump_epoch=True)
        goodbye = await svc.mail.send(email, "goodbye", name=user.first_name)
        await svc.mail.forget(email, keep=(goodbye,))
        await svc.tokens.delete_all(user_id)
        await svc.throttle.forget(email, user_id)
        await svc.activity.flush()  # events still queued for this account land before they go
        await activity.forget(user_id)
        await user.delete()
    await end_sessions(request, user_id, reason="deleted", bump_epoch=True)
    await session.destroy()
    await svc.store.forget_user(user_id)
    audit("account_deleted", ip=None, user_id=user_id)
