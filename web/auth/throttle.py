"""Login throttling in Redis: failures counted per account and per client address."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable

from web.redis import RedisClient, Script

LOCK_CAP = 24 * 3600  # the longest lockout; also how long past lockouts are remembered

# One failure for an account, in a fixed window. Reaching the limit locks the account for a
# window, twice as long on each lockout in a row (capped), and starts a fresh count.
_ACCOUNT_FAILED = """
local now, limit, window, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local failures
if tonumber(redis.call('HGET', KEYS[1], 'w') or 0) <= now then
  failures = 1
  redis.call('HSET', KEYS[1], 'f', 1, 'w', now + window)
else
  failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
end
local locked = 0
if failures >= limit then
  local lockouts = redis.call('HINCRBY', KEYS[1], 'n', 1)
  locked = math.min(window * 2 ^ (lockouts - 1), cap)
  redis.call('HSET', KEYS[1], 'u', now + locked, 'f', 0, 'w', 0)
end
redis.call('EXPIRE', KEYS[1], math.max(window, locked) + cap)
return locked
"""


# One failure from a client address, in a fixed window (INCR, then a TTL on the first one).
_IP_FAILED = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return failures
"""


def _account_key(email: str) -> str:
    # Hashed: the throttle needs to tell accounts apart, not to know their addresses.
    return "t:a:" + base64.urlsafe_b64encode(hashlib.sha256(email.encode()).digest()[:18]).decode()


def _ip_key(ip: str) -> str:
    return f"t:i:{ip}"


class LoginThrottle:
    def __init__(
        self,
        redis: RedisClient,
        *,
        max_failures: int,
        ip_max_failures: int,
        window: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.ip_max_failures = ip_max_failures
        self.window = window
        self.clock = clock
        self._account_failed = Script(redis, _ACCOUNT_FAILED)
        self._ip_failed = Script(redis, _IP_FAILED)

    async def retry_after(self, email: str, ip: str) -> int:
        """Seconds this attempt must wait, or 0 if it may go ahead."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(_account_key(email), "u")
            pipe.get(_ip_key(ip))
            pipe.ttl(_ip_key(ip))
            locked_until, ip_failures, ip_ttl = await pipe.execute()
        wait = int(locked_until or 0) - int(self.clock())
        if int(ip_failures or 0) >= self.ip_max_failures:
            wait = max(wait, ip_ttl if ip_ttl > 0 else self.window)
        return max(wait, 0)

    async def failed(self, email: str, ip: str) -> int:
        """Count a failure; return the lockout it caused in seconds (0 for none)."""
        locked = await self._account_failed(
            keys=[_account_key(email)],
            args=[int(self.clock()), self.max_failures, self.window, LOCK_CAP],
        )
        await self._ip_failed(keys=[_ip_key(ip)], args=[self.window])
        return int(locked)

    async def succeeded(self, email: str) -> None:
        await self.redis.delete(_account_key(email))
