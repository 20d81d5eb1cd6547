"""The Redis session store: one hash per session, one sorted set and one epoch per user.

Layout (see ids.py for digests and tags):

    s:<digest>          hash    the session's fields; PTTL = min(idle window, absolute deadline)
    u:{<tag>}<user id>  zset    member <digest> -> score: that session's absolute deadline (unix s)
    e:{<tag>}<user id>  string  the user's credential epoch (absent = 0)

A signed-in session's digest starts with its user's tag, so all three kinds of key of one
user live in one Redis Cluster slot, and every operation that must be atomic across them
(sign in under an unchanged epoch, end all sessions, revoke one) is one Lua script.

The epoch is what makes "end every other session" hold against requests in flight: a
change of credentials bumps it in the same script that ends the sessions, and a sign-in
creates its session only if the epoch it read *before* checking the password is still
the current one. So a sign-in that checked an old password can never leave a session
behind the sweep.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from web.redis import RedisClient, Script
from web.sessions import scripts
from web.sessions.agent import label
from web.sessions.ids import user_tag

# Field names are short because every session pays for them in Redis memory.
# SEEN is seconds since CREATED: a small number takes less room than a second timestamp.
USER, NAME, CREATED, SEEN, IP, AGENT = "u", "n", "c", "s", "ip", "a"  # AGENT: agent.browser_code()
UNVERIFIED = "v"  # present while the user's email address is not confirmed
AUTHED = "t"  # when the user last proved who they are, if later than CREATED (sudo mode)
REMEMBERED = "r"  # "keep me signed in": the longer timeouts apply
DATA_PREFIX = "d:"
SEEN_EVERY = 60  # seconds: how stale the stored last-seen time may get before it is rewritten
MAX_SESSIONS_PER_USER = 100  # the index never grows past this; the oldest sessions go first
# The epoch must outlive any request in flight and any token that carries it (a day at most);
# a month also lets it expire for accounts whose credentials stopped changing.
EPOCH_TTL = 30 * 86400
# A deleted account's epoch is bumped and kept this long, not deleted: a sign-in under way that
# read it before would otherwise find it absent (0) again, as it may have read it, and finish.
TOMBSTONE_TTL = 15 * 60


class StaleCredentials(Exception):
    """The user's credentials changed while this sign-in was under way; it must not complete."""


class Record(NamedTuple):
    """A session as stored: its fields and the milliseconds it has left (a tuple: one is built
    on every signed-in request)."""

    fields: dict[str, str]
    ttl_ms: int


@dataclass(frozen=True)
class SessionInfo:
    """One of a user's sessions, as the sessions page shows it."""

    digest: str
    created: int
    last_seen: int
    ip: str
    browser: str
    ttl_ms: int
    remembered: bool


def session_key(digest: str) -> str:
    return f"s:{digest}"


def short_user_id(user_id: str) -> str:
    # A MongoDB id in base64 rather than hex: 16 characters instead of 24, in every index key.
    if len(user_id) == 24 and all(c in "0123456789abcdef" for c in user_id):
        return base64.urlsafe_b64encode(bytes.fromhex(user_id)).decode()
    return user_id


def index_key(user_id: str) -> str:
    return f"u:{{{user_tag(user_id)}}}{short_user_id(user_id)}"


def epoch_key(user_id: str) -> str:
    return f"e:{{{user_tag(user_id)}}}{short_user_id(user_id)}"


def hold_key(user_id: str) -> str:
    """Present while the user's sign-ins are held (a password reset under way)."""
    return f"h:{{{user_tag(user_id)}}}{short_user_id(user_id)}"


def version_key(user_id: str) -> str:
    return f"v:{{{user_tag(user_id)}}}{short_user_id(user_id)}"


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class SessionStore:
    """Read and write sessions in Redis; timeouts are enforced here, by Redis TTLs."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        idle_timeout: int,
        absolute_timeout: int,
        clock: Callable[[], float] = time.time,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
        remember_idle_timeout: int = 604800,
        remember_absolute_timeout: int = 2592000,
    ) -> None:
        self.redis = redis
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.remember_idle_timeout = remember_idle_timeout
        self.remember_absolute_timeout = remember_absolute_timeout
        self.clock = clock
        constants = {
            "@IDLE@": idle_timeout * 1000,
            "@ABSOLUTE@": absolute_timeout * 1000,
            "@REMEMBER_IDLE@": remember_idle_timeout * 1000,
            "@REMEMBER_ABSOLUTE@": remember_absolute_timeout * 1000,
            "@SEEN_EVERY@": SEEN_EVERY,
        }
        load = scripts.LOAD
        for name, value in constants.items():
            load = load.replace(name, str(int(value)))
        self._load = Script(redis, load)
        self._create = Script(redis, scripts.CREATE)
        # Who is signed in must survive a failover: these writes wait for replicas (WAIT).
        durable = {"replicas": wait_replicas, "timeout_ms": wait_timeout_ms}
        self._create_for_user = Script(redis, scripts.CREATE_FOR_USER, **durable)
        self._update = Script(redis, scripts.UPDATE)
        self._end = Script(redis, scripts.END, **durable)
        self._bump = Script(redis, scripts.BUMP, **durable)
        self._claim = Script(redis, scripts.CLAIM, **durable)
        self._take = Script(redis, scripts.TAKE)
        self._list = Script(redis, scripts.LIST)
        self._set_all = Script(redis, scripts.SET_ALL)

    def now(self) -> int:
        return int(self.clock())

    async def load(self, digest: str, *, touch: bool) -> Record | None:
        """Return the session, sliding its idle window when touch is set."""
        reply = await self._load(
            keys=[session_key(digest)],
            args=[int(self.clock() * 1000), 1 if touch else 0],
        )
        if not reply:
            return None
        ttl_ms, flat = reply
        return Record(_pairs(flat), int(ttl_ms))

    def timeouts(self, fields: Mapping[str, str]) -> tuple[int, int]:
        """(idle, absolute) timeouts in seconds of a session with these fields."""
        if REMEMBERED in fields:
            return self.remember_idle_timeout, self.remember_absolute_timeout
        return self.idle_timeout, self.absolute_timeout

    def _expiry(self, fields: Mapping[str, str]) -> tuple[int, int]:
        """(now, expires at) in milliseconds for a new session with these fields."""
        idle, absolute = self.timeouts(fields)
        now_ms = int(self.clock() * 1000)
        deadline_ms = (int(fields[CREATED]) + absolute) * 1000
        return now_ms, min(now_ms + idle * 1000, deadline_ms)

    async def create(self, digest: str, fields: Mapping[str, str], *, lasting: int | None = None) -> int:
        """Store a new anonymous session (for `lasting` seconds, if sooner than the idle
        timeout); return its TTL in milliseconds."""
        now_ms, expires_at = self._expiry(fields)
        if lasting is not None:
            expires_at = min(expires_at, now_ms + lasting * 1000)
        flat = [x for pair in fields.items() for x in pair]
        await self._create(keys=[session_key(digest)], args=[expires_at, *flat])
        return expires_at - now_ms

    async def create_for_user(
        self, digest: str, fields: Mapping[str, str], *, epoch: int, replacing: str | None = None
    ) -> int:
        """Store a signed-in session and index it, if the user's epoch is still `epoch`; with
        `replacing` (a digest of the same user's), only if that session is alive, and it ends.

        Raises StaleCredentials when not. Returns the session's TTL in milliseconds.
        """
        user_id, created = fields[USER], int(fields[CREATED])
        now_ms, expires_at = self._expiry(fields)
        flat = [x for pair in fields.items() for x in pair]
        keys = [index_key(user_id), epoch_key(user_id), session_key(digest), hold_key(user_id)]
        if replacing is not None:
            keys.append(session_key(replacing))
        done = await self._create_for_user(
            keys=keys,
            # Whole seconds: an integer score takes a third of the memory of a fractional one.
            args=[
                now_ms // 1000,
                digest,
                created + self.timeouts(fields)[1],
                MAX_SESSIONS_PER_USER,
                epoch,
                expires_at,
                *flat,
            ],
        )
        if not done:
            raise StaleCredentials(user_id)
        return expires_at - now_ms

    async def update(self, digest: str, changed: Mapping[str, str], deleted: Iterable[str]) -> None:
        """Write just these fields, if the session still exists."""
        flat = [x for pair in changed.items() for x in pair]
        await self._update(keys=[session_key(digest)], args=[len(changed), *flat, *deleted])

    async def delete(self, digest: str, user_id: str | None) -> None:
        """Delete one session (and its index entry, for a signed-in one)."""
        if user_id is None:
            await self.redis.delete(session_key(digest))
        else:
            await self.end(user_id, only=[digest])

    async def bump_epoch(self, user_id: str) -> int:
        """Void sign-ins under way (and links tied to the epoch) without ending any session."""
        return int(await self._bump(keys=[epoch_key(user_id)], args=[EPOCH_TTL]))

    async def version(self, user_id: str) -> int:
        """The user's credential version: moved only by a password change, a reset, an address
        change (and a deletion). Links carry it; changes read it before their check."""
        return int(await self.redis.get(version_key(user_id)) or 0)

    async def version_and_epoch(self, user_id: str) -> tuple[int, int]:
        """Both, read together (one round trip, one moment): what an address change claims."""
        version, epoch = await self.redis.mget(version_key(user_id), epoch_key(user_id))
        return int(version or 0), int(epoch or 0)

    async def claim(
        self,
        user_id: str,
        version: int,
        *,
        session: str | None = None,
        epoch: int | None = None,
        move_version: bool = True,
    ) -> int | None:
        """Move the credential version on if it is still `version` (read before the credential
        was checked, or carried by a link), with `epoch` while the epoch is still that and, with
        `session` (a digest), while that session is alive; the epoch moves on too. Return the new
        epoch, or None if something came first. move_version=False moves only the epoch: what a
        request that is not itself a change claims (an address change asked for, see email.py).

        A credential change claims before it writes: of a reset, a password change, an address
        change and a deletion racing, one goes through; and one asked from a session stops if that
        session has ended meanwhile (revoke-others, "this wasn't me", a revoke, a deletion).
        Other epoch bumps (a factor added) void sign-ins in flight, not these: someone holding a
        session cannot keep the owner's reset links dead by bumping.
        """
        keys = [version_key(user_id), epoch_key(user_id)]
        if session is not None:
            keys.append(session_key(session))
        args = [EPOCH_TTL, version, "" if epoch is None else epoch, 1 if move_version else 0]
        claimed = await self._claim(keys=keys, args=args)
        return None if claimed is None else int(claimed)

    async def put_challenge(self, digest: str, purpose: str, value: str, ttl: int) -> None:
        """Keep a one-time value in this session (a WebAuthn challenge) for `ttl` seconds.

        In the session's own hash: it dies with the session, and names nothing else.
        """
        expires = self.now() + ttl
        await self._update(keys=[session_key(digest)], args=[1, f"x:{purpose}", f"{expires}|{value}"])

    async def take_challenge(self, digest: str, purpose: str) -> str | None:
        """The session's one-time value, used up: of requests racing with it, one gets it."""
        found = await self._take(keys=[session_key(digest)], args=[f"x:{purpose}"])
        if not found:
            return None
        expires, _, value = str(found).partition("|")
        return value if int(expires) >= self.now() else None

    async def epoch(self, user_id: str) -> int:
        """The user's credential epoch, to be read before a password is checked."""
        return int(await self.redis.get(epoch_key(user_id)) or 0)

    async def end(
        self,
        user_id: str,
        *,
        only: Iterable[str] = (),
        keep: str | None = None,
        bump_epoch: bool = False,
        forget: bool = False,
    ) -> tuple[int, list[str]]:
        """End the user's sessions `only` (or all but `keep`); return the epoch and the digests
        of the sessions that were alive.

        With bump_epoch, sign-ins already past their password check can no longer complete.
        With forget (the account is deleted), the index goes and the epoch is bumped and left as a
        tombstone for TOMBSTONE_TTL.
        """
        epoch, ended = await self._end(
            keys=[index_key(user_id), epoch_key(user_id), version_key(user_id)],
            args=[
                keep or "",
                1 if bump_epoch or forget else 0,
                TOMBSTONE_TTL if forget else EPOCH_TTL,
                1 if forget else 0,
                *only,
            ],
        )
        return int(epoch), list(ended)

    async def user_sessions(self, user_id: str) -> list[SessionInfo]:
        """Every live session of one user; prunes dead index entries on the way."""
        rows = await self._list(keys=[index_key(user_id)], args=[self.now()])
        sessions = []
        for digest, ttl, flat in rows:
            fields = _pairs(flat)
            if fields.get(USER) != user_id:
                continue
            sessions.append(
                SessionInfo(
                    digest=digest,
                    created=int(fields.get(CREATED, 0)),
                    last_seen=int(fields.get(CREATED, 0)) + int(fields.get(SEEN, 0)),
                    ip=fields.get(IP, ""),
                    browser=label(fields.get(AGENT, "")),
                    ttl_ms=int(ttl),
                    remembered=REMEMBERED in fields,
                )
            )
        return sessions

    async def rename(self, user_id: str, name: str) -> None:
        """Rewrite the display name kept in each live session of a user."""
        await self._set_all(keys=[index_key(user_id)], args=[NAME, name])

    async def hold_sign_ins(self, user_id: str, seconds: int) -> None:
        """No session of this user can be made until release_sign_ins() (or `seconds`, should
        the request that holds them never get there)."""
        await self.redis.set(hold_key(user_id), "1", ex=seconds)

    async def release_sign_ins(self, user_id: str) -> None:
        await self.redis.delete(hold_key(user_id))

    async def alive(self, digest: str) -> bool:
        """Whether the session still exists (not ended, not expired), without touching it."""
        return bool(await self.redis.exists(session_key(digest)))

    async def verified(self, user_id: str) -> None:
        """The user's address is confirmed: no session of theirs carries the mark any more."""
        await self._set_all(keys=[index_key(user_id)], args=[UNVERIFIED, ""])
