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

from web.redis import RedisClient, Script
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

# Read a session and, when asked, slide its idle window without passing the absolute
# deadline; rewrite last-seen at most once a minute. One round trip either way. The store's
# timeouts are written into the script (@IDLE@ ...): every page view sends two arguments, not
# seven, and redis-py's encoding of each is a measurable part of a page's CPU.
_LOAD = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local created, seen, idle, absolute = 0, 0, @IDLE@, @ABSOLUTE@
for i = 1, #h, 2 do
  if h[i] == 'c' then created = tonumber(h[i + 1])
  elseif h[i] == 's' then seen = tonumber(h[i + 1])
  elseif h[i] == 'r' then idle, absolute = @REMEMBER_IDLE@, @REMEMBER_ABSOLUTE@ end
end
local now = tonumber(ARGV[1])
local left = created * 1000 + absolute - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local ttl
if ARGV[2] == '1' then
  ttl = math.min(idle, left)
  -- An absolute time, not a relative one: the request's own latency must not stretch the deadline.
  redis.call('PEXPIREAT', KEYS[1], now + ttl)
  if now - (created + seen) * 1000 >= @SEEN_EVERY@ * 1000 then
    redis.call('HSET', KEYS[1], 's', math.floor(now / 1000) - created)
  end
else
  ttl = redis.call('PTTL', KEYS[1])
end
return {ttl, h}
"""

# Write a new anonymous session and its expiry together, so no session lives without a TTL.
_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""

# Sign in: only under the epoch read before the password was checked; then index the session
# (dropping entries past their deadline, evicting the oldest beyond the cap, never the newcomer)
# and write it. The index expires with the last session it can hold.
_CREATE_FOR_USER = """
if tonumber(redis.call('GET', KEYS[2]) or 0) ~= tonumber(ARGV[5]) then return false end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra)) do
    if member ~= ARGV[2] and extra > 0 then
      redis.call('ZREM', KEYS[1], member)
      redis.call('DEL', 's:' .. member)
      extra = extra - 1
    end
  end
end
local ttl = math.ceil((tonumber(ARGV[3]) - now) * 1000)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('PEXPIREAT', KEYS[3], ARGV[6])
return 1
"""

# Change only the fields this request changed, and only while the session exists: a
# session revoked or expired mid-request must stay dead, not come back without a TTL.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 2 + 2 * n)) end
return 1
"""

# End sessions of one user: those named, or (with no names) all but ARGV[1]; optionally bump
# the epoch first, in the same step, so no sign-in in flight can add one after the sweep. With
# ARGV[4] = 1, the index and the epoch go too (the account is deleted): all of it or nothing.
# Returns the epoch and the digests of the sessions that were alive.
_END = """
local epoch = tonumber(redis.call('GET', KEYS[2]) or 0)
if ARGV[2] == '1' then
  epoch = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local targets = {}
if #ARGV > 4 then
  for i = 5, #ARGV do targets[#targets + 1] = ARGV[i] end
else
  targets = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local ended = {}
for _, member in ipairs(targets) do
  if member ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], member)
    if redis.call('DEL', 's:' .. member) == 1 then ended[#ended + 1] = member end
  end
end
if ARGV[4] == '1' then redis.call('DEL', KEYS[1], KEYS[2]) end
return {epoch, ended}
"""

# Read a field and delete it, in one step: a one-time value is used once.
_TAKE = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then redis.call('HDEL', KEYS[1], ARGV[1]) end
return value
"""

_BUMP = """
local epoch = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return epoch
"""

# Every live session of a user, pruning index entries whose session is gone.
_LIST = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = 's:' .. member
  local ttl = redis.call('PTTL', key)
  if ttl > 0 then
    out[#out + 1] = {member, ttl, redis.call('HGETALL', key)}
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"""

# Set one field (or with an empty value, delete it) in every live session of a user: what
# sessions keep about the user (the name, the unverified mark) changes everywhere at once.
_SET_ALL = """
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = 's:' .. member
  if redis.call('EXISTS', key) == 1 then
    if ARGV[2] == '' then redis.call('HDEL', key, ARGV[1]) else redis.call('HSET', key, ARGV[1], ARGV[2]) end
  end
end
return 1
"""


class StaleCredentials(Exception):
    """The user's credentials changed while this sign-in was under way; it must not complete."""


@dataclass(frozen=True)
class Record:
    """A session as stored: its fields and the milliseconds it has left."""

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
        load = _LOAD
        for name, value in constants.items():
            load = load.replace(name, str(int(value)))
        self._load = Script(redis, load)
        self._create = Script(redis, _CREATE)
        # Who is signed in must survive a failover: these writes wait for replicas (WAIT).
        durable = {"replicas": wait_replicas, "timeout_ms": wait_timeout_ms}
        self._create_for_user = Script(redis, _CREATE_FOR_USER, **durable)
        self._update = Script(redis, _UPDATE)
        self._end = Script(redis, _END, **durable)
        self._bump = Script(redis, _BUMP, **durable)
        self._take = Script(redis, _TAKE)
        self._list = Script(redis, _LIST)
        self._set_all = Script(redis, _SET_ALL)

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

    async def create(self, digest: str, fields: Mapping[str, str]) -> int:
        """Store a new anonymous session; return its TTL in milliseconds."""
        now_ms, expires_at = self._expiry(fields)
        flat = [x for pair in fields.items() for x in pair]
        await self._create(keys=[session_key(digest)], args=[expires_at, *flat])
        return expires_at - now_ms

    async def create_for_user(self, digest: str, fields: Mapping[str, str], *, epoch: int) -> int:
        """Store a signed-in session and index it, if the user's epoch is still `epoch`.

        Raises StaleCredentials when it is not. Returns the session's TTL in milliseconds.
        """
        user_id, created = fields[USER], int(fields[CREATED])
        now_ms, expires_at = self._expiry(fields)
        flat = [x for pair in fields.items() for x in pair]
        done = await self._create_for_user(
            keys=[index_key(user_id), epoch_key(user_id), session_key(digest)],
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
        """
        epoch, ended = await self._end(
            keys=[index_key(user_id), epoch_key(user_id)],
            args=[keep or "", 1 if bump_epoch else 0, EPOCH_TTL, 1 if forget else 0, *only],
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

    async def verified(self, user_id: str) -> None:
        """The user's address is confirmed: no session of theirs carries the mark any more."""
        await self._set_all(keys=[index_key(user_id)], args=[UNVERIFIED, ""])
