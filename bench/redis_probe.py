"""What a signed-in page costs Redis: round trips on the wire, and bytes of memory per session."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis import ConnectionPool, Redis

from web.redis import connect_redis
from web.sessions import SessionStore
from web.sessions.store import index_key, session_key

# The mail senders' stream (web/mail/queue.py): they poll it every few seconds whatever the
# pages do, so a poll that falls inside the window is not a page's round trip.
MAIL_STREAM = "mail:q"


def round_trips(redis: Redis, fetch: Callable[[], object], pages: int) -> tuple[Counter[str], Counter[str]]:
    """Commands that clients sent over the wire while `pages` pages were fetched (MONITOR):
    those of the pages, and those of the mail senders' polling (on MAIL_STREAM).

    Unlike INFO commandstats, MONITOR tells a command sent by a client from one that a Lua
    script ran, so this counts round trips (a pipeline would count once per command in it).
    """
    marker = f"bench-monitor-end-{secrets.token_hex(4)}"
    sent: Counter[str] = Counter()
    background: Counter[str] = Counter()
    # Connected before MONITOR starts, so that its handshake (HELLO) is not counted.
    ender = Redis(connection_pool=ConnectionPool(**redis.connection_pool.connection_kwargs))
    ender.ping()
    with ender, redis.monitor() as monitor:  # type: ignore[no-untyped-call]
        for _ in range(pages):
            fetch()
        ender.echo(marker)
        while True:
            line = monitor.next_command()
            command = line["command"]
            if marker in command:
                return sent, background
            if line["client_type"] != "lua":
                mail = MAIL_STREAM in command.split(" ")
                (background if mail else sent)[command.split(" ", 1)[0].lower()] += 1


@dataclass(frozen=True)
class SessionMemory:
    """Mean bytes of Redis memory per session, as MEMORY USAGE counts them."""

    session: float  # the session's own hash
    index_share: float  # its user's index (every session of the user), divided among them

    @property
    def total(self) -> float:
        return self.session + self.index_share


async def session_memory(redis_url: str, redis: Redis, user_ids: Iterable[str]) -> SessionMemory:
    """Memory per session over every live session of these users, found as the app finds them."""
    client = connect_redis(redis_url, cluster=False)
    # Timeouts do not matter here: the store only lists sessions.
    store = SessionStore(client, idle_timeout=1, absolute_timeout=1)
    own: list[int] = []
    share: list[float] = []
    try:
        for user_id in user_ids:
            sessions = await store.user_sessions(user_id)
            index = int(redis.memory_usage(index_key(user_id), samples=0) or 0)
            for info in sessions:
                own.append(int(redis.memory_usage(session_key(info.digest), samples=0) or 0))
                share.append(index / len(sessions))
    finally:
        await client.aclose()
    if not own:
        raise RuntimeError("no live session to measure")
    return SessionMemory(sum(own) / len(own), sum(share) / len(share))
