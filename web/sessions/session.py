"""The session a handler sees: loaded on first use, written back only where it changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

from web.sessions.ids import digest, new_id, user_tag
from web.sessions.store import (
    AGENT,
    AUTHED,
    CREATED,
    DATA_PREFIX,
    IP,
    NAME,
    REMEMBERED,
    SEEN,
    UNVERIFIED,
    USER,
    SessionStore,
)

CookieAction = Literal["set", "clear"] | None


class SessionUser(NamedTuple):
    """What pages need to know about the signed-in user, kept in the session (no database trip).

    A named tuple: built on every read of Session.user (a few times a page), at a third of the
    cost of a frozen dataclass."""

    id: str
    name: str
    verified: bool = True


class Session:
    """One visitor's session. Dict-like for app data; login/cycle/destroy for its lifecycle.

    Built by the middleware from a cookie the server itself signed, and not read from
    Redis until a handler calls load(), so that requests that never look at the session
    (static files, health checks) cost nothing.
    """

    def __init__(
        self, store: SessionStore, session_id: str | None, session_digest: str | None = None
    ) -> None:
        self._store = store
        self.id = session_id
        # What Redis knows it by; the middleware passes the one it already worked out.
        self.digest = session_digest or (digest(session_id) if session_id else None)
        self.loaded = False
        self.expired_digest: str | None = None  # set when a genuine id turned out to be gone
        self.cookie: CookieAction = None
        self.ttl_ms = 0
        self._fields: dict[str, str] = {}
        self._data: dict[str, Any] = {}
        self._changed: set[str] = set()
        self._deleted: set[str] = set()

    # -- reading ----------------------------------------------------------------------------

    async def load(self, *, touch: bool = True) -> Session:
        """Read the session once; touch slides its idle window (a poll must not)."""
        if self.loaded:
            return self
        if self.digest is None:
            self.loaded = True
            return self
        record = await self._store.load(self.digest, touch=touch)
        self.loaded = True  # only now: a failed read leaves it unloaded (the error page is anonymous)
        if record is None:
            # Expired, revoked or signed out: never adopt the id again, and drop the cookie.
            self.expired_digest, self.id, self.digest = self.digest, None, None
            self.cookie = "clear"
            return self
        self.ttl_ms = record.ttl_ms
        for name, value in record.fields.items():
            if name.startswith(DATA_PREFIX):
                self._data[name[len(DATA_PREFIX) :]] = json.loads(value)
            else:
                self._fields[name] = value
        return self

    @property
    def user(self) -> SessionUser | None:
        if USER not in self._fields:
            return None
        return SessionUser(self._fields[USER], self._fields.get(NAME, ""), UNVERIFIED not in self._fields)

    @property
    def created(self) -> int:
        return int(self._fields.get(CREATED, 0))

    @property
    def authenticated_at(self) -> int:
        """When the user last proved who they are: the sign-in, or a later re-authentication."""
        return int(self._fields.get(AUTHED) or self.created)

    @property
    def expires_in(self) -> int:
        """Whole seconds until the idle timeout, rounded up so a countdown never ends early."""
        return -(-self.ttl_ms // 1000)

    @property
    def remembered(self) -> bool:
        """Signed in with "keep me signed in": the longer timeouts, a cookie that outlives the browser."""
        return REMEMBERED in self._fields

    @property
    def idle_timeout(self) -> int:
        return self._store.timeouts(self._fields)[0]

    @property
    def warn_at(self) -> int:
        """Seconds left when the countdown warns: a minute, or half the idle window if shorter."""
        return min(60, self.idle_timeout // 2)

    @property
    def absolute_expires_in(self) -> int:
        """Seconds until the absolute deadline, which nothing extends."""
        return max(0, self.created + self._store.timeouts(self._fields)[1] - self._store.now())

    # -- app data: a dict whose changes are tracked per key ---------------------------------

    def _check_loaded(self) -> None:
        if not self.loaded:
            raise RuntimeError("await session.load() before using the session")

    def __getitem__(self, key: str) -> Any:
        self._check_loaded()
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        self._check_loaded()
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        self._check_loaded()
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        self._check_loaded()
        return iter(self._data)

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_loaded()
        json.dumps(value)  # fail here, in the handler, rather than at commit time
        self._data[key] = value
        self._changed.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        self._check_loaded()
        del self._data[key]
        self._changed.discard(key)
        self._deleted.add(key)

    def pop(self, key: str, default: Any = None) -> Any:
        self._check_loaded()
        if key not in self._data:
            return default
        value = self._data[key]
        del self[key]
        return value

    @property
    def modified(self) -> bool:
        return bool(self._changed or self._deleted)

    # -- lifecycle ----------------------------------------------------------------------------

    async def login(
        self, user: SessionUser, *, ip: str, agent: str, epoch: int, remember: bool = False
    ) -> None:
        """Sign in: a new id (the old one dies), app data carried over, deadlines from now.

        `epoch` is the user's credential epoch as read before the password was checked;
        raises StaleCredentials if it has changed since.
        """
        self._check_loaded()
        now = self._store.now()
        fields = {USER: user.id, NAME: user.name, CREATED: str(now), SEEN: "0", IP: ip, AGENT: agent}
        if not user.verified:
            fields[UNVERIFIED] = "1"
        if remember:
            fields[REMEMBERED] = "1"
        previous_user = self._fields.get(USER)
        if previous_user not in (None, user.id):
            self._data.clear()  # another person's data must not follow a switch of account
        await self._move(fields, previous_user=previous_user, epoch=epoch)

    async def cycle(self, *, epoch: int) -> None:
        """Give the signed-in session a new id, keeping everything else (deadlines included).

        Raises StaleCredentials if the epoch is no longer `epoch`, or the session has ended.
        """
        self._check_loaded()
        if self.digest is None or self.user is None:
            raise RuntimeError("no signed-in session to renew")
        await self._move(dict(self._fields), previous_user=self.user.id, epoch=epoch, replace=True)

    async def _move(
        self,
        fields: dict[str, str],
        *,
        previous_user: str | None,
        epoch: int,
        replace: bool = False,
        lasting: int | None = None,
    ) -> None:
        old_digest = self.digest
        user_id = fields.get(USER)
        session_id = new_id(user_tag(user_id) if user_id else None)
        new_digest = digest(session_id)
        stored = {**fields, **{DATA_PREFIX + k: json.dumps(v) for k, v in self._data.items()}}
        if user_id:
            replacing = old_digest if replace else None
            self.ttl_ms = await self._store.create_for_user(
                new_digest, stored, epoch=epoch, replacing=replacing
            )
        else:
            self.ttl_ms = await self._store.create(new_digest, stored, lasting=lasting)
        if old_digest is not None and not replace:
            await self._store.delete(old_digest, previous_user)
        self.id, self.digest, self._fields = session_id, new_digest, fields
        self._changed.clear()
        self._deleted.clear()
        self.cookie = "set"

    async def rename(self, name: str) -> None:
        """Change the user's display name in every one of their sessions, this one included."""
        user = self.user
        if user is None:
            raise RuntimeError("no user to rename")
        await self._store.rename(user.id, name)
        self._fields[NAME] = name

    async def reauthenticated(self) -> None:
        """The user just proved who they are again (password, code or passkey): sudo mode."""
        if self.digest is None or self.user is None:
            raise RuntimeError("no signed-in session to re-authenticate")
        now = str(self._store.now())
        await self._store.update(self.digest, {AUTHED: now}, ())
        self._fields[AUTHED] = now

    async def materialize(self, *, lasting: int | None = None) -> None:
        """Make sure the session exists in Redis now (an anonymous one is otherwise written
        only when it first holds data), so that something can be bound to it; one made here
        lasts `lasting` seconds unless a request uses it (which slides the idle window)."""
        self._check_loaded()
        if self.digest is None:
            now = self._store.now()
            await self._move({CREATED: str(now), SEEN: "0"}, previous_user=None, epoch=0, lasting=lasting)

    async def destroy(self) -> None:
        """Sign out: delete the session everywhere and tell the browser to drop the cookie."""
        self._check_loaded()
        if self.digest is not None:
            await self._store.delete(self.digest, self._fields.get(USER))
        self.id = self.digest = None
        self._fields.clear()
        self._data.clear()
        self._changed.clear()
        self._deleted.clear()
        self.ttl_ms = 0
        self.cookie = "clear"

    async def commit(self) -> None:
        """Persist changed app data: per key, so concurrent requests never undo each other."""
        if not self.modified:
            return
        if self.digest is None:
            if self._data:
                # An anonymous visitor's first data: only now does the session need to exist.
                now = self._store.now()
                await self._move({CREATED: str(now), SEEN: "0"}, previous_user=None, epoch=0)
            return
        changed = {DATA_PREFIX + k: json.dumps(self._data[k]) for k in self._changed}
        deleted = [DATA_PREFIX + k for k in self._deleted]
        await self._store.update(self.digest, changed, deleted)
        self._changed.clear()
        self._deleted.clear()
