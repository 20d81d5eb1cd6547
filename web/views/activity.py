"""GET /account/activity: the account's own security history, newest first."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from web import activity
from web.guard import SignedIn, signed_in
from web.htmx import is_htmx, json_reply, wants_json
from web.templating import render

LABELS = {
    "sign_up": "Account created",
    "sign_in": "Signed in",
    "sign_in_failed": "Failed sign-in",
    "locked": "Sign-ins locked after too many failures",
    "session_ended": "Session ended",
    "password_changed": "Password changed",
    "password_reset": "Password reset with a mailed link",
    "reset_requested": "Password reset link asked for",
    "email_change_requested": "Email address change asked for",
    "email_changed": "Email address changed",
    "email_verified": "Email address confirmed",
    "recovery_code_used": "Recovery code used",
    "new_browser": "Sign-in from a new browser (a notice was mailed)",
    "session_reported": "All sessions ended from a “this wasn't me” link",
    "factor_changed": "Sign-in security changed",
}


@signed_in
async def activity_page(request: Request, me: SignedIn) -> Response:
    events, cursor = await activity.page(me.user.id, request.query_params.get("before"))
    if wants_json(request):
        body = {
            "events": [
                {
                    "type": e.type,
                    "at": e.at.isoformat(timespec="seconds"),
                    "ip": e.ip,
                    "browser": e.browser,
                    **e.detail,
                }
                for e in events
            ],
            "next": cursor,
        }
        response: Response = json_reply(body)
        response.headers.add_vary_header("Accept")
        return response
    # "Show more" with htmx appends the next rows (and a new button) to the list.
    block = "more" if is_htmx(request) and request.query_params.get("before") else None
    return render(
        request, "pages/activity.html", {"events": events, "cursor": cursor, "labels": LABELS}, block=block
    )
