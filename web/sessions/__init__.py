"""Server-side sessions in Redis: ids and cookies, the store, the session object, the middleware."""

from web.sessions.ids import Signer
from web.sessions.middleware import SessionMiddleware, session_of
from web.sessions.session import Session, SessionUser
from web.sessions.store import SessionInfo, SessionStore, StaleCredentials

# What a session says when it is over, wherever it says it (pages, countdown, errors).
EXPIRED = "Your session has expired."

__all__ = [
    "EXPIRED",
    "Session",
    "SessionInfo",
    "SessionMiddleware",
    "SessionStore",
    "SessionUser",
    "Signer",
    "StaleCredentials",
    "session_of",
]
