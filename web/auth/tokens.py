"""One-time tokens for links in mails: password reset, email verification, "this wasn't me".

A token is 43 base64url characters: the user's tag (see sessions/ids.py), then 234 random
bits. Redis holds only a hash of it, under a key in the user's slot, with a TTL:

    k:<kind>:<digest>   string  JSON: user id, the user's token set, what the link is for
    k:{<tag>}<user id>  set     the user's outstanding tokens (so that deleting an account
                                deletes them all)

Reading a token (a GET, as a mail scanner fetching the link does) never uses it up; only
consume() does, atomically, so a link works exactly once however many requests race.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from web.redis import RedisClient, Script
from web.sessions.ids import TAG_LENGTH, digest, user_tag
from web.sessions.store import short_user_id

_ISSUE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# The token's JSON names the user's set (same slot): use it up and forget it in one step.
_CONSUME = """
local value = redis.call('GETDEL', KEYS[1])
if not value then return false end
redis.call('SREM', cjson.decode(value)['s'], KEYS[1])
return value
"""

_DELETE_ALL = """
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do n = n + redis.call('DEL', key) end
redis.call('DEL', KEYS[1])
return n
"""


@dataclass(frozen=True)
class Token:
    """What a token stands for."""

    user_id: str
    data: dict[str, Any]


def _well_formed(raw: str) -> bool:
    return len(raw) == 43 and raw.isascii() and all(c.isalnum() or c in "-_" for c in raw)


def token_key(kind: str, raw: str) -> str:
    return f"k:{kind}:{digest(raw)}"


def user_tokens_key(user_id: str) -> str:
    return f"k:{{{user_tag(user_id)}}}{short_user_id(user_id)}"


class Tokens:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._issue = Script(redis, _ISSUE)
        self._consume = Script(redis, _CONSUME)
        self._delete_all = Script(redis, _DELETE_ALL)

    async def issue(self, kind: str, user_id: str, *, ttl: int, **data: Any) -> str:
        """A fresh token for this user; returns the raw token, which is only ever mailed."""
        raw = user_tag(user_id) + secrets.token_urlsafe(32)[TAG_LENGTH:]
        mine = user_tokens_key(user_id)
        value = json.dumps({"u": user_id, "s": mine, "d": data}, separators=(",", ":"))
        await self._issue(keys=[token_key(kind, raw), mine], args=[value, ttl])
        return raw

    async def peek(self, kind: str, raw: str) -> Token | None:
        """What a token stands for, without using it up; None if unknown, used or expired."""
        if not _well_formed(raw):
            return None
        return _token(await self.redis.get(token_key(kind, raw)))

    async def consume(self, kind: str, raw: str) -> Token | None:
        """Use a token up: of any number of concurrent calls, exactly one gets it."""
        if not _well_formed(raw):
            return None
        return _token(await self._consume(keys=[token_key(kind, raw)], args=[]))

    async def delete_all(self, user_id: str) -> int:
        """Delete every outstanding token of a user (the account is being deleted)."""
        return int(await self._delete_all(keys=[user_tokens_key(user_id)], args=[]))


def _token(value: str | bytes | None) -> Token | None:
    if not value:
        return None
    stored = json.loads(value)
    return Token(stored["u"], stored["d"])
