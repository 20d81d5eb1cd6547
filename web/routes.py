"""Every URL of the app, in one table."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette import routing
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from web.views import account, activity, auth, devmail, email, pages, reauth, recovery, security, sessions

STATIC = Path(__file__).resolve().parent.parent / "static"
Endpoint = Callable[[Request], Awaitable[Response]]


class Route(routing.Route):
    """Starlette's route, calling an async endpoint without a second exception layer.

    Starlette wraps each endpoint in its own copy of the app's exception handling (a closure,
    a wrapper around `send`, two more frames on every request); here an HTTPException from an
    endpoint goes up to the app's own layer for it (web/errors.py, HttpErrors), which renders
    the same page and sits inside the session middleware too.
    """

    def __init__(self, path: str, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if inspect.iscoroutinefunction(endpoint):
            self.app = _call(endpoint)


def _call(endpoint: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


routes: list[BaseRoute] = [
    Route("/", pages.home, name="home"),
    Route("/login", auth.login_page, methods=["GET"], name="login"),
    Route("/login", auth.login, methods=["POST"]),
    Route("/login/2fa", auth.second_factor, methods=["POST"], name="second_factor"),
    Route("/login/passkey/options", auth.passkey_options, methods=["POST"], name="passkey_sign_in_options"),
    Route("/login/passkey", auth.passkey, methods=["POST"], name="passkey_sign_in"),
    Route("/reauth", reauth.reauth_page, methods=["GET"], name="reauth"),
    Route("/reauth", reauth.reauth, methods=["POST"]),
    Route("/reauth/passkey/options", reauth.passkey_options, methods=["POST"], name="reauth_passkey_options"),
    Route("/reauth/passkey", reauth.passkey, methods=["POST"], name="reauth_passkey"),
    Route("/signup", auth.signup_page, methods=["GET"], name="signup"),
    Route("/signup", auth.signup, methods=["POST"]),
    Route("/logout", auth.logout_page, methods=["GET"], name="logout"),
    Route("/logout", auth.logout, methods=["POST"]),
    Route("/session", sessions.session_status, methods=["GET"], name="session_status"),
    Route("/session/refresh", sessions.session_refresh, methods=["POST"], name="session_refresh"),
    Route("/sessions", sessions.sessions_page, methods=["GET"], name="sessions"),
    Route("/sessions/revoke-others", sessions.revoke_others, methods=["POST"], name="revoke_others"),
    Route("/sessions/{handle}/revoke", sessions.revoke, methods=["POST"], name="revoke_session"),
    Route("/account/password", account.password_page, methods=["GET"], name="password"),
    Route("/account/password", account.change_password, methods=["POST"]),
    Route("/account/profile", account.profile_page, methods=["GET"], name="profile"),
    Route("/account/profile", account.change_profile, methods=["POST"]),
    Route("/account/delete", account.delete_page, methods=["GET"], name="delete_account"),
    Route("/account/delete", account.delete_account, methods=["POST"]),
    Route("/password/forgot", recovery.forgot_page, methods=["GET"], name="forgot_password"),
    Route("/password/forgot", recovery.forgot, methods=["POST"]),
    Route("/password/reset/{token}", recovery.reset_page, methods=["GET"], name="password_reset"),
    Route("/password/reset/{token}", recovery.reset, methods=["POST"]),
    Route("/email/verify/resend", email.resend_verification, methods=["POST"], name="resend_verification"),
    Route("/email/verify/{token}", email.verify_page, methods=["GET"], name="verify_email"),
    Route("/email/verify/{token}", email.verify, methods=["POST"]),
    Route("/account", email.account_page, methods=["GET"], name="account"),
    Route("/account/email", email.email_page, methods=["GET"], name="change_email"),
    Route("/account/email", email.change_email, methods=["POST"]),
    Route("/account/security", security.security_page, methods=["GET"], name="security"),
    Route("/account/activity", activity.activity_page, methods=["GET"], name="activity"),
    Route("/account/2fa/totp", security.totp_page, methods=["GET"], name="totp"),
    Route("/account/2fa/totp", security.enable_totp, methods=["POST"]),
    Route("/account/2fa/totp/disable", security.disable_totp, methods=["POST"], name="disable_totp"),
    Route("/account/2fa/recovery-codes", security.recovery_codes, methods=["POST"], name="recovery_codes"),
    Route("/account/passkeys/options", security.passkey_options, methods=["POST"], name="passkey_options"),
    Route("/account/passkeys", security.add_passkey, methods=["POST"], name="add_passkey"),
    Route("/account/passkeys/{id}/rename", security.rename_passkey, methods=["POST"], name="rename_passkey"),
    Route("/account/passkeys/{id}/delete", security.remove_passkey, methods=["POST"], name="remove_passkey"),
    Route("/sessions/report/{token}", sessions.report_page, methods=["GET"], name="report_session"),
    Route("/sessions/report/{token}", sessions.report, methods=["POST"]),
    Route("/dev/mail", devmail.inbox, methods=["GET"], name="dev_mail"),
    Route("/dev/mail/{id}", devmail.message, methods=["GET"], name="dev_mail_message"),
    Route("/healthz", pages.healthz, name="healthz"),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
