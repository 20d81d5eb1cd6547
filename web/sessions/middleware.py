"""Pure ASGI session middleware: cookie -> Session in scope; on response start, save + Set-Cookie."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.sessions.ids import Signer, digest
from web.sessions.session import Session
from web.sessions.store import SessionStore

GENUINE_KEPT = 10_000  # verified cookies remembered; then the memory starts again


class SessionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        store: SessionStore,
        signer: Signer,
        secure: bool,
        on_expired: Callable[[Scope, str], None] | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.signer = signer
        self.secure = secure
        self.on_expired = on_expired
        # The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only
        # and Path=/, so a sibling subdomain cannot plant a session cookie on us.
        self.cookie_name = "__Host-sid" if secure else "sid"
        self.attributes = "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
        # Cookies already found genuine, by their exact text: (id, signed with the current key,
        # digest). A repeat visit skips the HMAC check and the digest, a tenth of the session's
        # own work on a page. Only cookies this app signed get in; past the bound, it starts again.
        self.genuine: dict[str, tuple[str, bool, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = cookie_parser(_cookie_header(scope)).get(self.cookie_name)
        known = self.genuine.get(raw) if raw else None
        if known is None and raw and (genuine := self.signer.unsign(raw)):
            if len(self.genuine) >= GENUINE_KEPT:
                self.genuine.clear()
            known = self.genuine[raw] = (*genuine, digest(genuine[0]))
        session_id, current_key, session_digest = known or (None, True, None)
        session = Session(self.store, session_id, session_digest)
        if not current_key:
            # Signed with a retiring key: re-sign with the current one, once a handler has read the
            # session (only then is it known whether the cookie outlives the browser).
            session.cookie = "set"
        scope["session"] = session

        def finish(message: Message) -> Awaitable[None]:
            headers = list(message.get("headers", ()))
            if session.loaded:
                _vary_on_cookie(headers)
            if session.cookie == "set" and session.id and session.loaded:
                # A remembered session's cookie outlives the browser, until the absolute deadline;
                # any other is a browser-session cookie: the server decides when it ends.
                lasts = f"; Max-Age={session.absolute_expires_in}" if session.remembered else ""
                value = self.signer.sign(session.id)
                cookie = f"{self.cookie_name}={value}; {self.attributes}{lasts}"
                headers.append((b"set-cookie", cookie.encode("latin-1")))
            elif session.cookie == "clear" and raw:
                cookie = f"{self.cookie_name}=; Max-Age=0; {self.attributes}"
                headers.append((b"set-cookie", cookie.encode("latin-1")))
            message["headers"] = headers
            if session.expired_digest and self.on_expired:
                self.on_expired(scope, session.expired_digest)
            return send(message)

        async def commit_and_finish(message: Message) -> None:
            # Saved before the first byte goes out, so a store failure can still become a 503.
            await session.commit()
            await finish(message)

        # Not async: a page that changed nothing in its session goes straight to `send`, and so
        # does the body (one coroutine less per message).
        def send_with_cookie(message: Message) -> Awaitable[None]:
            if message["type"] != "http.response.start":
                return send(message)
            return commit_and_finish(message) if session.modified else finish(message)

        await self.app(scope, receive, send_with_cookie)


def _cookie_header(scope: Scope) -> str:
    """The first Cookie header, as Starlette's request.headers.get("cookie") reads it."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return ""


def _vary_on_cookie(headers: list[tuple[bytes, bytes]]) -> None:
    """Add Cookie to the Vary header (raw: this runs on every signed-in response)."""
    for i, (name, value) in enumerate(headers):
        if name == b"vary":
            if b"cookie" not in value.lower():
                headers[i] = (name, value + b", Cookie")
            return
    headers.append((b"vary", b"Cookie"))


def session_of(conn: HTTPConnection) -> Session:
    """The request's session (not yet loaded)."""
    session = conn.scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError("SessionMiddleware is not installed")
    return session
