"""Server-side sessions in Redis: ids and cookies, the store, the session object, the middleware."""

from web.sessions.ids import Signer
from web.sessions.middleware import SessionMiddleware, session_of
from web.sessions.session import Session, SessionUser
from web.sessions.store import SessionStore

__all__ = ["Session", "SessionMiddleware", "SessionStore", "SessionUser", "Signer", "session_of"]
