"""Throttling in Redis: attempts reserved atomically *before* the password is checked.

A limiter is a small hash per counted thing: `f` attempts in the window that ends at `w`
(failed, or still in flight), `p` in flight, `u` locked until, `n` lockouts so far. An
attempt first *reserves* a place in every limiter that applies to it, in one script: if any
is locked or full, the attempt is refused before bcrypt runs; so however many requests arrive
at once, at most the allowed number are checked. Afterwards the attempt *settles*: a failure
that fills a limiter locks it (for a window, twice as long on each lockout in a row, capped);
a success gives its place back, and (with nothing else in flight) clears the failures of the
limiters that belong to that client alone.

Sign-in counts per (account, client): the client is the browser's device cookie when it has
signed in to this account before, else its address (IPv6 by /64). So an attacker guessing
from elsewhere locks only themselves; a per-account ceiling catches guessing spread over many
addresses, but never locks out the owner's known browser; a per-address limit catches one
address guessing many accounts.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from web.redis import RedisClient, Script

LOCK_CAP = 24 * 3600  # the longest lockout; also how long past lockouts are remembered
TAKEN_PER_ADDRESS = 5  # sign-ups for an address that has an account, an hour, whoever asks
RESET_MAILS_PER_ADDRESS = 3
RESET_MAILS_PER_CLIENT = 20
PASSKEY_CHALLENGES_PER_CLIENT = 300  # an hour: sign-in pages opened by people with no session
VERIFY_MAILS_PER_USER = 3
VERIFY_MAILS_PER_ADDRESS = 5  # an address's own confirmation links, an hour, whichever account asks
CHANGE_MAILS_PER_ADDRESS = 3  # links to move an account to one address, an hour, whichever ask
HOUR = 3600

# ARGV: now, cap, then per key: its limit, its window, and its flags: 1 if it records the
# group's keys, 2 if it is only checked (a lock or a full count refuses; nothing is taken).
_RESERVE = """
local UNLIMITED = 2147483648
local now, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'u', 'f', 'w')
  local u, f, w = tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0)
  local limit = tonumber(ARGV[3 * i])
  if limit >= UNLIMITED then
    -- listed only to count and to record: its lock is not for this client
  elseif u > now then
    wait = math.max(wait, u - now)
  elseif w > now and f >= limit then
    wait = math.max(wait, w - now)
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local window, flags = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  if flags >= 2 then
    -- only checked
  elseif tonumber(redis.call('HGET', key, 'w') or 0) <= now then
    redis.call('HSET', key, 'f', 1, 'w', now + window)
  else
    redis.call('HINCRBY', key, 'f', 1)
  end
  if flags < 2 then
    redis.call('HINCRBY', key, 'p', 1)
    if flags == 1 then
      for _, other in ipairs(KEYS) do
        if other ~= key then redis.call('HSET', key, 'k:' .. other, 1) end
      end
    end
    redis.call('EXPIRE', key, window + cap)
  end
end
return 0
"""

# ARGV[3] = 'ok' (give the places back; clear the client's own limiters), 'failed' (the
# reserved attempt failed), 'undo' (give the place back, clear nothing) or 'count' (a
# failure that reserved nothing: count it now). Then per key: limit, window, 1 if ok clears it.
_SETTLE = """
local now, cap, outcome = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local locked = 0
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[1 + 3 * i]), tonumber(ARGV[2 + 3 * i])
  local pending = 0
  if outcome ~= 'count' then pending = math.max(redis.call('HINCRBY', key, 'p', -1), 0) end
  if outcome == 'ok' and ARGV[3 + 3 * i] == '1' and pending == 0 then
    -- A success clears this client's failures, but not while other attempts are in flight:
    -- in a burst that holds the right password, the wrong ones keep their places.
    redis.call('HSET', key, 'f', 0)
  elseif outcome == 'ok' or outcome == 'undo' then
    if tonumber(redis.call('HGET', key, 'f') or 0) > 0 then redis.call('HINCRBY', key, 'f', -1) end
  else
    local f
    if outcome == 'count' then
      if tonumber(redis.call('HGET', key, 'w') or 0) <= now then
        f = 1
        redis.call('HSET', key, 'f', 1, 'w', now + window)
      else
        f = redis.call('HINCRBY', key, 'f', 1)
      end
    else
      f = tonumber(redis.call('HGET', key, 'f') or 0)
    end
    if f >= limit then
      local lockouts = redis.call('HINCRBY', key, 'n', 1)
      local lock = math.min(window * 2 ^ (lockouts - 1), cap)
      redis.call('HSET', key, 'u', now + lock, 'f', 0, 'w', 0)
      locked = math.max(locked, lock)
    end
    redis.call('EXPIRE', key, window + cap)
  end
end
return locked
"""


# Delete a limiter and every limiter it recorded (a password reset unlocks the account).
_CLEAR = """
local fields = redis.call('HKEYS', KEYS[1])
for _, field in ipairs(fields) do
  if string.sub(field, 1, 2) == 'k:' then redis.call('DEL', string.sub(field, 3)) end
end
return redis.call('DEL', KEYS[1])
"""
UNLIMITED = 2**31


def account_tag(email: str) -> str:
    # Hashed: the throttle needs to tell accounts apart, not to know their addresses.
    return base64.urlsafe_b64encode(hashlib.sha256(email.encode()).digest()[:12]).decode()


@dataclass(frozen=True)
class Limit:
    """One limiter: its key, how many attempts it allows in a window, whether a success clears it."""

    key: str
    limit: int
    window: int
    clears: bool = False
    records: bool = False  # keeps the names of the other limiters of its group (for clear())
    check_only: bool = False  # refuses when locked or full, but takes no place and is not settled


class Throttle:
    """Reserve and settle attempts on limiters; the app's rules are in the methods below."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        max_failures: int,
        account_max_failures: int,
        ip_max_failures: int,
        window: int,
        signup_ip_limit: int,
        signup_limit: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.account_max_failures = account_max_failures
        self.ip_max_failures = ip_max_failures
        self.window = window
        self.signup_ip_limit = signup_ip_limit
        self.signup_limit = signup_limit
        self.clock = clock
        self._reserve = Script(redis, _RESERVE)
        self._settle = Script(redis, _SETTLE)
        self._clear = Script(redis, _CLEAR)

    # -- the rules ------------------------------------------------------------------------

    def sign_in(self, email: str, network: str, device: str | None) -> list[list[Limit]]:
        """The limiters of a sign-in, grouped by Redis slot (each group is one script call).

        `device` is the browser's device id when it has signed in to this account before.
        """
        tag, window = account_tag(email), self.window
        per_address = [Limit(f"t:i:{network}", self.ip_max_failures, window)]
        # Codes guessed wrong lock the password step too: knowing the password is not enough
        # to go on guessing codes (a right password would otherwise clear the count each time).
        codes = Limit(self._codes_key(tag), self.max_failures, window, check_only=True)
        if device:
            # The owner's known browser: a counter of its own, and no account-wide ceiling.
            own = Limit(f"t:a:{{{tag}}}:d:{device}", self.max_failures, window, clears=True)
            account = Limit(f"t:a:{{{tag}}}", UNLIMITED, window, records=True)
        else:
            own = Limit(f"t:a:{{{tag}}}:n:{network}", self.max_failures, window, clears=True)
            account = Limit(f"t:a:{{{tag}}}", self.account_max_failures, window, records=True)
        return [[own, account, codes], per_address]

    def second_factor(self, email: str, network: str, device: str | None) -> list[list[Limit]]:
        """The limiters of a code at sign-in: the sign-in's, and the account's count of wrong
        codes, which only a right code clears."""
        groups = self.sign_in(email, network, device)
        first = [limit for limit in groups[0] if not limit.check_only]
        tag = account_tag(email)
        return [
            [*first, Limit(self._codes_key(tag), self.max_failures, self.window, clears=True)],
            *groups[1:],
        ]

    @staticmethod
    def pending_sign_in(name: str, checks: int, ttl: int) -> list[list[Limit]]:
        """The codes one sign-in may try between its password and its end (`name`: that sign-in)."""
        return [[Limit(f"t:c:{name}", checks, ttl)]]

    @staticmethod
    def _codes_key(tag: str) -> str:
        return f"t:a:{{{tag}}}:2fa"

    async def unlock(self, email: str) -> None:
        """Clear every sign-in limiter of an account (its owner proved it by mail)."""
        await self._clear(keys=[f"t:a:{{{account_tag(email)}}}"], args=[])

    async def forget(self, email: str, user_id: str) -> None:
        """Delete every limiter that names an account (it is being deleted). Those that count mail
        and answers *to an address* stay their hour: deleting and making the account again would
        otherwise start them afresh, and an address that is not the maker's gets mail after mail."""
        await self.unlock(email)
        await self.redis.delete(f"t:v:{{{account_tag(user_id)}}}")

    def reset_mail(self, email: str, network: str) -> list[list[Limit]]:
        """Password reset mails: a few per address an hour, and some per client address."""
        return [
            [Limit(f"t:r:{{{account_tag(email)}}}", RESET_MAILS_PER_ADDRESS, HOUR)],
            [Limit(f"t:r:{network}", RESET_MAILS_PER_CLIENT, HOUR)],
        ]

    def verify_mail(self, user_id: str) -> list[list[Limit]]:
        """Verification mails asked for again by a signed-in user, an hour."""
        return [[Limit(f"t:v:{{{account_tag(user_id)}}}", VERIFY_MAILS_PER_USER, HOUR)]]

    def verify_mail_to(self, address: str, *, change: bool) -> list[list[Limit]]:
        """Links mailed to one address, an hour, whichever accounts ask: to confirm it as an
        account's own (sign-up, resend), and to move an account there, counted apart, so that
        accounts asking to move to an address cannot use up the links its own account needs."""
        if change:
            return [[Limit(f"t:n:{{{account_tag(address)}}}", CHANGE_MAILS_PER_ADDRESS, HOUR)]]
        return [[Limit(f"t:m:{{{account_tag(address)}}}", VERIFY_MAILS_PER_ADDRESS, HOUR)]]

    def password_change(self, session_digest: str) -> list[list[Limit]]:
        """Wrong passwords (and codes) checked for a signed-in session (re-authentication, the
        change forms): a counter per session, so that one session's guesses never lock another
        out, the owner's included. Named after the session (same slot): it ends with it (END)."""
        return [[Limit(f"t:p:{session_digest}", self.max_failures, self.window, clears=True)]]

    def sign_up(self, network: str) -> list[list[Limit]]:
        """Sign-ups per client address, and in all, an hour."""
        return [
            [Limit(f"t:s:{network}", self.signup_ip_limit, HOUR)],
            [Limit("t:s", self.signup_limit, HOUR)],
        ]

    def passkey_options(self, network: str) -> list[list[Limit]]:
        """Passkey challenges for visitors with no session yet (each makes one), per address."""
        return [[Limit(f"t:k:{network}", PASSKEY_CHALLENGES_PER_CLIENT, HOUR)]]

    def taken_address(self, email: str) -> list[list[Limit]]:
        """Sign-ups answered "taken" for one address, an hour, whoever asks: the 409 must not
        be an unlimited oracle for which addresses have accounts."""
        return [[Limit(f"t:s:{{{account_tag(email)}}}", TAKEN_PER_ADDRESS, HOUR)]]

    # -- the mechanism --------------------------------------------------------------------

    async def reserve(self, groups: Sequence[Sequence[Limit]]) -> int:
        """Take a place in every limiter; 0 if taken, else the seconds to wait (nothing taken)."""
        taken: list[Sequence[Limit]] = []
        for group in groups:
            per_key = [
                x
                for limit in group
                for x in (limit.limit, limit.window, int(limit.records) + 2 * int(limit.check_only))
            ]
            args = [int(self.clock()), LOCK_CAP, *per_key]
            wait = int(await self._reserve(keys=[limit.key for limit in group], args=args))
            if wait:
                for done in taken:  # all or nothing: give back what the earlier groups granted
                    await self._run_settle(done, "undo")
                return wait
            taken.append(group)
        return 0

    async def settle(self, groups: Sequence[Sequence[Limit]], *, ok: bool) -> int:
        """Close a reserved attempt; return the lockout its failure caused (0 for none)."""
        return max([await self._run_settle(group, "ok" if ok else "failed") for group in groups], default=0)

    async def release(self, groups: Sequence[Sequence[Limit]]) -> None:
        """Give back the places of an attempt that was never decided (an outage, a full queue)."""
        for group in groups:
            await self._run_settle(group, "undo")

    async def count_failure(self, groups: Sequence[Sequence[Limit]]) -> int:
        """Count a failure that reserved nothing (e.g. a sign-in limiter hit by another form)."""
        return max([await self._run_settle(group, "count") for group in groups], default=0)

    async def _run_settle(self, group: Sequence[Limit], outcome: str) -> int:
        group = [limit for limit in group if not limit.check_only]
        if not group:
            return 0
        per_key = [x for limit in group for x in (limit.limit, limit.window, int(limit.clears))]
        args = [int(self.clock()), LOCK_CAP, outcome, *per_key]
        return int(await self._settle(keys=[limit.key for limit in group], args=args))
