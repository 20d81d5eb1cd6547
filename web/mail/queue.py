"""The outgoing mail queue: one Redis stream read through one consumer group.

Layout (one key, so the same code runs on Redis Cluster):

    mail:q   stream   one entry per unsent message:
                        m   the message (RFC 5322 bytes), sealed with SecretBox: Redis never
                            holds a link or token in clear
                        c   when it was queued (unix seconds)
                        to  the caller's opaque tag for the recipient (an HMAC of the
                            address), so a recipient's mail can be found and deleted
                            without the address ever being stored
             group "senders": the pending entries list says which sender holds which entry

An entry is deleted (XACK + XDEL) once it is sent or given up on, so the stream holds only
mail still to send and its length is the queue's depth. The entries a sender read but never
acknowledged (it crashed, or SMTP failed) stay pending, and any sender claims them once they
have been idle long enough; a sender keeps the entry it is working on fresh, so no other
sender claims a message that is being sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, cast

from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from web.crypto import SecretBox
from web.mail.message import from_bytes, to_bytes
from web.redis import RedisClient, Script

BODY, CREATED, TO = "m", "c", "to"
PAGE = 500  # entries per XRANGE when searching the queue

# XAUTOCLAIM with JUSTID, then the entries read back one by one: Redis 6.2 would claim a
# deleted entry and return it as nil with no id to acknowledge it by; here it is acknowledged.
_CLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5], 'JUSTID')
local out, gone = {r[1]}, {}
for _, id in ipairs(r[2]) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 0 then table.insert(gone, id) else table.insert(out, e[1]) end
end
if #gone > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(gone)) end
return out
"""

# Set the idle time of entries that this consumer still holds: 0 keeps them from being claimed
# while they are sent; a long one hands them back at once. Entries deleted meanwhile (by
# delete_for) are acknowledged instead. Returns how many are still held and present.
_HOLD = """
local held = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
      redis.call('XACK', KEYS[1], ARGV[1], id)
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
      held = held + 1
    end
  end
end
return held
"""

# Finished with these entries: out of the pending list and out of the stream, together.
_DONE = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

# Forget consumers that hold nothing and have not been seen for ARGV[2] ms (every sender start
# adds one), or just ARGV[3] when given. In a script: a consumer must not be deleted between
# being seen with nothing pending and taking an entry, which would strand that entry.
_PRUNE = """
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  local wanted = ARGV[3] == '' or info['name'] == ARGV[3]
  if wanted and info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""


@dataclass(frozen=True)
class QueuedMail:
    """One entry of the queue, its message still sealed."""

    id: str
    created: float
    recipient_tag: str
    sealed: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> QueuedMail:
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        created = float(values.get(CREATED, "0"))
    except ValueError:
        created = 0.0  # unreadable: treated as too old to send
    return QueuedMail(_text(entry_id), created, values.get(TO, ""), values.get(BODY, ""))


def _stream_entries(reply: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """The entries of the one stream in an XREADGROUP reply, RESP2 or RESP3."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
        # RESP3: redis-py wraps the stream's list of entries in one more list.
        return cast(
            list[tuple[Any, dict[Any, Any]]],
            entries[0] if entries and isinstance(entries[0], list) else entries,
        )
    return cast(list[tuple[Any, dict[Any, Any]]], reply[0][1])


class MailQueue:
    """Queue sealed mail in a Redis stream; the primitives a sender needs to take it out once."""

    def __init__(
        self,
        redis: RedisClient,
        box: SecretBox,
        *,
        stream: str = "mail:q",
        group: str = "senders",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.box = box
        self.stream = stream
        self.group = group
        self.clock = clock
        self._claim = Script(redis, _CLAIM)
        self._hold = Script(redis, _HOLD)
        self._done = Script(redis, _DONE)
        self._prune = Script(redis, _PRUNE)

    async def enqueue(self, message: EmailMessage, *, recipient_tag: str) -> str:
        """Queue a message, sealed; return its entry id. One Redis round trip, no SMTP."""
        fields: dict[FieldT, EncodableT] = {
            BODY: self.box.seal(to_bytes(message)),
            CREATED: f"{self.clock():.3f}",
            TO: recipient_tag,
        }
        return _text(await self.redis.xadd(self.stream, fields))

    def open(self, mail: QueuedMail) -> EmailMessage:
        """The message inside an entry; raises SealError if it cannot be opened."""
        return from_bytes(self.box.open(mail.sealed))

    async def depth(self) -> int:
        """Messages not yet sent: waiting, or taken by a sender and not finished."""
        return int(await self.redis.xlen(self.stream))

    async def delete_for(self, recipient_tag: str, *, except_ids: Collection[str] = ()) -> int:
        """Delete the unsent mail queued for one recipient, but for `except_ids`; return how many.

        A message a sender has already started on may still go out.
        """
        doomed: list[str] = []
        start = "-"
        while True:
            page = cast(
                list[tuple[Any, dict[Any, Any]]], await self.redis.xrange(self.stream, start, "+", count=PAGE)
            )
            for entry_id, fields in page:
                mail = _entry(entry_id, fields)
                if mail.recipient_tag == recipient_tag and mail.id not in except_ids:
                    doomed.append(mail.id)
            if len(page) < PAGE:
                break
            start = "(" + _text(page[-1][0])
        for i in range(0, len(doomed), PAGE):
            await self._done(keys=[self.stream], args=[self.group, *doomed[i : i + PAGE]])
        return len(doomed)

    # What a sender uses.

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group unless they exist."""
        try:
            # From id 0, not $: mail queued before the first sender ever ran is sent too.
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, *, count: int, block_ms: int) -> list[QueuedMail]:
        """Take up to `count` messages no sender has seen, waiting up to block_ms for one."""
        reply = await self.redis.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms or None
        )
        return [_entry(entry_id, fields) for entry_id, fields in _stream_entries(reply)]

    async def claim(
        self, consumer: str, *, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[str, list[QueuedMail]]:
        """Take over messages left idle by any sender; return the cursor to continue from too."""
        reply = await self._claim(keys=[self.stream], args=[self.group, consumer, min_idle_ms, cursor, count])
        entries = [_entry(e[0], dict(zip(e[1][::2], e[1][1::2], strict=True))) for e in reply[1:]]
        return _text(reply[0]), entries

    async def hold(self, consumer: str, ids: Collection[str], *, idle_ms: int = 0) -> int:
        """Set the idle time of entries this consumer still holds; return how many it holds."""
        if not ids:
            return 0
        held = await self._hold(keys=[self.stream], args=[self.group, consumer, idle_ms, *ids])
        return int(held)

    async def done(self, *ids: str) -> None:
        """Finished with these messages (sent, or given up): remove them."""
        if ids:
            await self._done(keys=[self.stream], args=[self.group, *ids])

    async def prune_consumers(self, *, idle_ms: int, name: str = "") -> int:
        """Forget consumers holding nothing and idle at least idle_ms (only `name`, if given)."""
        return int(await self._prune(keys=[self.stream], args=[self.group, idle_ms, name]))
