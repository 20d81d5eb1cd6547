"""Redis persistence for sessions: one hash per session, one sorted set per user.

Layout (all keys single-slot, so the same code runs on Redis Cluster):

    s:<digest>   hash   the session's fields; PTTL = min(idle window, absolute deadline)
    u:<user id>  zset   member <digest> -> score: that session's absolute deadline (unix s)

<digest> is the base64url SHA-256 of the session id: a dump of Redis holds no usable cookie.
Every operation on a session key is a single command or a script on that one key, and
the two kinds of key are never changed atomically together. Instead the order is chosen
so that a failure half-way leaves only an index entry without a session, which readers
prune, and never a session missing from its user's index.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from web.redis import RedisClient, Script

# Field names are short because every session pays for them in Redis memory.
USER, NAME, CREATED, SEEN, IP, AGENT = "u", "n", "c", "s", "ip", "a"
DATA_PREFIX = "d:"
SEEN_EVERY = 60  # seconds: how stale the stored last-seen time may get before it is rewritten
MAX_SESSIONS_PER_USER = 100  # the index never grows past this; the oldest sessions go first

# Read a session and, when asked, slide its idle window without passing the absolute
# deadline; rewrite last-seen at most once a minute. One round trip either way.
_LOAD = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local created, seen = 0, 0
for i = 1, #h, 2 do
  if h[i] == 'c' then created = tonumber(h[i + 1]) elseif h[i] == 's' then seen = tonumber(h[i + 1]) end
end
local now = tonumber(ARGV[1])
local left = created * 1000 + tonumber(ARGV[3]) - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local ttl
if ARGV[4] == '1' then
  ttl = math.min(tonumber(ARGV[2]), left)
  -- An absolute time, not a relative one: the request's own latency must not stretch the deadline.
  redis.call('PEXPIREAT', KEYS[1], now + ttl)
  if now - seen * 1000 >= tonumber(ARGV[5]) * 1000 then
    redis.call('HSET', KEYS[1], 's', math.floor(now / 1000))
  end
else
  ttl = redis.call('PTTL', KEYS[1])
end
return {ttl, h}
"""

# Write a new session and its expiry together, so no session ever lives without a TTL.
_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
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

# Add a session to its user's index, dropping entries past their deadline and evicting the
# oldest beyond the cap; the index expires with the last session it can hold.
_INDEX_ADD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
local evicted = {}
if extra > 0 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra)) do
    if member ~= ARGV[2] and #evicted < extra then
      redis.call('ZREM', KEYS[1], member)
      table.insert(evicted, member)
    end
  end
end
local ttl = math.ceil((tonumber(ARGV[3]) - tonumber(ARGV[1])) * 1000)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return evicted
"""


@dataclass(frozen=True)
class Record:
    """A session as stored: its fields and the milliseconds it has left."""

    fields: dict[str, str]
    ttl_ms: int


def session_key(digest: str) -> str:
    return f"s:{digest}"


def index_key(user_id: str) -> str:
    return f"u:{user_id}"


class SessionStore:
    """Read and write sessions in Redis; timeouts are enforced here, by Redis TTLs."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        idle_timeout: int,
        absolute_timeout: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.clock = clock
        self._load = Script(redis, _LOAD)
        self._create = Script(redis, _CREATE)
        self._update = Script(redis, _UPDATE)
        self._index_add = Script(redis, _INDEX_ADD)

    def now(self) -> int:
        return int(self.clock())

    async def load(self, digest: str, *, touch: bool) -> Record | None:
        """Return the session, sliding its idle window when touch is set."""
        reply = await self._load(
            keys=[session_key(digest)],
            args=[
                int(self.clock() * 1000),
                self.idle_timeout * 1000,
                self.absolute_timeout * 1000,
                1 if touch else 0,
                SEEN_EVERY,
            ],
        )
        if not reply:
            return None
        ttl_ms, flat = reply
        return Record(dict(zip(flat[::2], flat[1::2], strict=True)), int(ttl_ms))

    async def create(self, digest: str, fields: Mapping[str, Any]) -> int:
        """Store a new session; return its TTL in milliseconds."""
        now_ms = int(self.clock() * 1000)
        deadline_ms = (int(fields[CREATED]) + self.absolute_timeout) * 1000
        expires_at = min(now_ms + self.idle_timeout * 1000, deadline_ms)
        flat = [x for pair in fields.items() for x in pair]
        await self._create(keys=[session_key(digest)], args=[expires_at, *flat])
        return expires_at - now_ms

    async def update(self, digest: str, changed: Mapping[str, str], deleted: Iterable[str]) -> bool:
        """Write just these fields if the session still exists; False if it is gone."""
        flat = [x for pair in changed.items() for x in pair]
        reply = await self._update(keys=[session_key(digest)], args=[len(changed), *flat, *deleted])
        return bool(reply)

    async def delete(self, digest: str, user_id: str | None) -> None:
        """Delete a session and its index entry (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(session_key(digest))
            if user_id:
                pipe.zrem(index_key(user_id), digest)
            await pipe.execute()

    async def index_add(self, user_id: str, digest: str, created: int) -> None:
        """Record a new session in its user's index, before the session itself is written."""
        # Whole seconds: an integer score takes a third of the memory of a fractional one.
        evicted = await self._index_add(
            keys=[index_key(user_id)],
            args=[self.now(), digest, created + self.absolute_timeout, MAX_SESSIONS_PER_USER],
        )
        if evicted:
            await self.redis.delete(*(session_key(old) for old in evicted))

    async def rename(self, user_id: str, name: str) -> None:
        """Rewrite the display name kept in each live session of a user."""
        for digest in await self.user_sessions(user_id):
            await self.update(digest, {NAME: name}, ())

    async def user_sessions(self, user_id: str) -> dict[str, Record]:
        """Every live session of one user, by digest; prunes dead index entries on the way."""
        index = index_key(user_id)
        await self.redis.zremrangebyscore(index, "-inf", self.now())
        digests = cast(list[str], await self.redis.zrange(index, 0, -1))
        if not digests:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.hgetall(session_key(digest))
                pipe.pttl(session_key(digest))
            replies = await pipe.execute()
        live: dict[str, Record] = {}
        dead: list[str] = []
        for digest, fields, ttl in zip(digests, replies[::2], replies[1::2], strict=True):
            if fields and ttl > 0 and fields.get(USER) == user_id:
                live[digest] = Record(fields, ttl)
            else:
                dead.append(digest)
        if dead:
            await self.redis.zrem(index, *dead)
        return live
