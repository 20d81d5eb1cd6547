"""Every URL of the app, in one table."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from web.views import account, auth, devmail, email, pages, recovery, sessions

STATIC = Path(__file__).resolve().parent.parent / "static"

routes: list[BaseRoute] = [
    Route("/", pages.home, name="home"),
    Route("/login", auth.login_page, methods=["GET"], name="login"),
    Route("/login", auth.login, methods=["POST"]),
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
    Route("/sessions/report/{token}", sessions.report_page, methods=["GET"], name="report_session"),
    Route("/sessions/report/{token}", sessions.report, methods=["POST"]),
    Route("/dev/mail", devmail.inbox, methods=["GET"], name="dev_mail"),
    Route("/dev/mail/{id}", devmail.message, methods=["GET"], name="dev_mail_message"),
    Route("/healthz", pages.healthz, name="healthz"),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
