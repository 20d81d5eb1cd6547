"""What a signed-in page costs Redis: commands, round trips and bytes of memory per session."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis import ConnectionPool, Redis

from web.sessions.ids import digest
from web.sessions.store import USER, index_key, session_key


def command_calls(redis: Redis) -> Counter[str]:
    """Calls per command since the server started, from INFO commandstats."""
    stats: dict[str, Any] = redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


def calls_between(before: Counter[str], after: Counter[str]) -> Counter[str]:
    """The commands run in between, without the INFO calls that measured them.

    Commands a Lua script runs (redis.call) are counted here too, beside the EVALSHA itself.
    """
    delta = after - before
    delta.pop("info", None)
    return delta


def round_trips(redis: Redis, fetch: Callable[[], object], pages: int) -> Counter[str]:
    """Commands that clients sent over the wire while `pages` pages were fetched (MONITOR).

    Unlike INFO commandstats, MONITOR tells a command sent by a client from one that a Lua
    script ran, so this counts round trips (a pipeline would count once per command in it).
    """
    marker = f"bench-monitor-end-{secrets.token_hex(4)}"
    sent: Counter[str] = Counter()
    # Connected before MONITOR starts, so that its handshake (HELLO) is not counted.
    ender = Redis(connection_pool=ConnectionPool(**redis.connection_pool.connection_kwargs))
    ender.ping()
    with ender, redis.monitor() as monitor:  # type: ignore[no-untyped-call]
        for _ in range(pages):
            fetch()
        ender.echo(marker)
        while True:
            line = monitor.next_command()
            if marker in line["command"]:
                return sent
            if line["client_type"] != "lua":
                sent[line["command"].split(" ", 1)[0].lower()] += 1


@dataclass(frozen=True)
class SessionMemory:
    """Bytes of Redis memory one session takes, as MEMORY USAGE counts them."""

    session: float  # the s:<digest> hash
    index_share: float  # the user's u:<id> sorted set, divided by the sessions in it

    @property
    def total(self) -> float:
        return self.session + self.index_share


def session_memory(redis: Redis, session_ids: Iterable[str]) -> SessionMemory:
    """Mean memory per session over these sessions (ids, as in the cookie before the '.')."""
    own, share = [], []
    for session_id in session_ids:
        key = session_key(digest(session_id))
        user_id = redis.hget(key, USER)
        if user_id is None:
            raise RuntimeError(f"session {key} is gone; cannot measure its memory")
        index = index_key(str(user_id))
        own.append(int(redis.memory_usage(key, samples=0) or 0))
        share.append(int(redis.memory_usage(index, samples=0) or 0) / max(int(redis.zcard(index)), 1))
    return SessionMemory(sum(own) / len(own), sum(share) / len(share))
