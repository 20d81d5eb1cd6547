"""Every URL of the app, in one table."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from web.views import account, auth, pages, sessions

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
    Route("/healthz", pages.healthz, name="healthz"),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
