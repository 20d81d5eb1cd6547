"""Redis behind Sentinel: the REDIS_URL form, a master client that follows failovers, and WAIT.

REDIS_URL for Sentinel::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service_name[/db][?option=value&...]
    redis+sentinels://...   the same over TLS, to the sentinels and to the data nodes alike

- The hosts are the sentinels (port 26379 when left out; IPv6 as ``[::1]:26379``).
- username and password are for the data nodes (master and replicas), as in ``redis://``.
  The sentinels get none: give them their own with ``?sentinel_username=...&sentinel_password=...``.
- The database number is the second path segment (default 0).
- Other options are those of ``redis://`` (``socket_timeout``, ``client_name``, ...) and, for
  ``redis+sentinels://``, the TLS ones (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
  ``ssl_cert_reqs``, ...), which then apply to sentinel connections too.
- Percent-encode ``@ , / : ? #`` in names and passwords.

How redis-py (8.1, redis/asyncio/sentinel.py) follows a failover, and what this module adds:

- A new pooled connection asks the sentinels for the master before it connects
  (SentinelManagedConnection._connect_retry -> SentinelConnectionPool.get_master_address),
  and a changed address makes the pool close its *idle* connections. A connection that breaks
  is rediscovered the next time the pool hands it out.
- But the command-level retry reconnects a broken connection to the address it had
  (AbstractConnection.send_packed_command -> connect_check_health -> _connect), without asking
  the sentinels: redis-py issue #3874. MasterConnection asks them on every (re)connect.
- A READONLY reply on a master connection (a demoted master) closes that connection and is raised
  as ConnectionError, which the one retry answers by rediscovering (the fix above).
- With no master known (all sentinels report it down, or none answers), connecting raises
  MasterNotFoundError, a ConnectionError: a 503 at once, not a hang.
- redis-py's sentinel clients retry each query up to 10 times with backoff; a dead sentinel
  would then cost seconds per discovery. Here they do not retry: the next sentinel is asked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff

from web.redis import POOL_SIZE, TIMEOUT_S, Batcher

log = logging.getLogger("web")

SCHEMES = {"redis+sentinel": False, "redis+sentinels": True}  # scheme -> TLS
DEFAULT_PORT = 26379
# Query options besides TLS that make sense in a URL; the rest of redis-py's are code, not text.
OPTIONS = frozenset({"client_name", "socket_timeout", "socket_connect_timeout", "health_check_interval"})
TLS_OPTIONS = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)
SENTINEL_AUTH = ("sentinel_username", "sentinel_password")
# How often a pool in use asks the sentinels whether the master moved (one query, to one sentinel).
MASTER_CHECK_S = 1.0
# WAIT blocks on the server while the client's socket read runs down its own timeout: the reply
# must come back this long before the socket timeout, or the read fails and the write is retried.
WAIT_MARGIN_S = 0.25


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed redis+sentinel:// URL."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    ssl: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # typed as redis-py parses redis:// ones


def is_sentinel_url(raw: str) -> bool:
    return urlsplit(raw).scheme in SCHEMES


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6] or [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad sentinel address {item!r}")
        port_text = rest[1:] if rest else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad IPv6 address in {item!r}") from None
    else:
        host, _, port_text = item.partition(":")
        if ":" in port_text:
            raise ValueError(f"bad sentinel address {item!r} (write IPv6 addresses in brackets)")
    if not host:
        raise ValueError(f"sentinel address {item!r} has no host")
    if not port_text:
        return unquote(host), DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in sentinel address {item!r}")
    return unquote(host), int(port_text)


def _options(query: str, tls: bool) -> dict[str, Any]:
    # redis-py's own parser types the values (socket_timeout=0.5 -> float) exactly as for redis://.
    options: dict[str, Any] = dict(parse_url(f"redis://localhost?{query}")) if query else {}
    options.pop("host", None)
    for name in options:
        if name in ("db", "ssl"):
            where = "the path (/service_name/db)" if name == "db" else "the redis+sentinels:// scheme"
            raise ValueError(f"give {name!r} through {where}, not as a query option")
        if name in TLS_OPTIONS and not tls:
            raise ValueError(f"{name!r} needs TLS: use redis+sentinels://")
        if name not in OPTIONS | TLS_OPTIONS | set(SENTINEL_AUTH):
            raise ValueError(f"unknown option {name!r}")
    return options


def parse_sentinel_url(raw: str) -> SentinelUrl:
    """Parse a redis+sentinel:// or redis+sentinels:// URL; ValueError says what is wrong."""
    parts = urlsplit(raw)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    if parts.fragment:
        raise ValueError("a sentinel URL has no #fragment")
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if not hostinfo:
        raise ValueError("no sentinel host")
    sentinels = tuple(_host_port(item) for item in hostinfo.split(","))
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    path = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not path:
        raise ValueError("no service name: add /service_name after the hosts")
    if len(path) > 2:
        raise ValueError("path must be /service_name or /service_name/db")
    service_name = unquote(path[0])
    db_text = path[1] if len(path) == 2 else "0"
    if not db_text.isdigit():
        raise ValueError(f"database must be a number, not {db_text!r}")
    tls = SCHEMES[parts.scheme]
    options = _options(parts.query, tls)
    return SentinelUrl(
        sentinels=sentinels,
        service_name=service_name,
        db=int(db_text),
        username=username,
        password=password,
        sentinel_username=options.pop("sentinel_username", None),
        sentinel_password=options.pop("sentinel_password", None),
        ssl=tls,
        options=options,
    )


class MasterConnection(SentinelManagedConnection):
    """A master connection that asks the sentinels where the master is on every (re)connect.

    redis-py asks only when the pool hands out a disconnected connection; the command-level retry
    reconnects to the old address (redis-py #3874), so after a failover that retry was wasted on
    a dead or demoted master, and could write to an old master that came back before being demoted.
    """

    async def _connect_retry(self) -> None:
        await self.connect_check_health(check_health=self.connection_pool.check_connection)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        # No socket-level retry: it would go to the same address; the retry that wraps this
        # call (connect() or the command's) asks the sentinels again.
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class MasterSSLConnection(MasterConnection, SSLConnection):
    pass


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool, with two changes.

    It waits for a free connection like connect_redis's pool (the plain one raises "Too many
    connections" at once, a 503 under load).

    And it notices a new master even when it opens no new connection: redis-py asks the sentinels
    only when it connects, so after a failover that left the old master running (SENTINEL
    FAILOVER, a partition) a warm pool went on writing to the old master until Sentinel demoted
    it, about 10 s later, and every one of those writes was lost. Here the pool asks at most once
    per MASTER_CHECK_S, and a connection that comes back from an old master is closed.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.next_check = 0.0
        self.batcher = Batcher(self)

    async def get_connection(
        self, command_name: Any = None, *keys: Any, **options: Any
    ) -> AbstractConnection:
        now = asyncio.get_running_loop().time()
        if now >= self.next_check:
            self.next_check = now + MASTER_CHECK_S
            try:
                # Closes the idle connections if the master moved.
                await self.get_master_address()  # type: ignore[no-untyped-call]
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                # Sentinels down or no master: the connections we have may still work.
                log.warning("could not ask the sentinels for the master of %r: %r", self.service_name, exc)
        connection: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        address = (connection.host, connection.port) if isinstance(connection, MasterConnection) else None
        if address and connection.is_connected and self.master_address not in (None, address):
            # nowait: a close that times out must not keep the connection counted as in use.
            await connection.disconnect(nowait=True)
        await super().release(connection)


class SentinelRedis(Redis):
    """The master client; closing it also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            pool = self.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                await pool.sentinel_manager.aclose()


def connect_sentinel(url: SentinelUrl, **options: Any) -> Redis:
    """A client for the master of url.service_name that fails fast and follows failovers."""
    # Same fail-fast options as connect_redis; query options in the URL win, as with from_url.
    settings: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": TIMEOUT_S / 2,
        "socket_timeout": TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
        "max_connections": POOL_SIZE,
        "timeout": TIMEOUT_S,  # the wait for a free pooled connection
        **options,
        **url.options,
    }
    tls = {name: value for name, value in settings.items() if name in TLS_OPTIONS}
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings["socket_connect_timeout"],
        "socket_timeout": settings["socket_timeout"],
        "retry": Retry(NoBackoff(), 0),  # a dead sentinel: go on to the next one at once
        "username": url.sentinel_username,
        "password": url.sentinel_password,
        "ssl": url.ssl,
        **tls,
    }
    sentinel = Sentinel(list(url.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        url.service_name,
        redis_class=SentinelRedis,
        connection_pool_class=BlockingSentinelPool,
        connection_class=MasterSSLConnection if url.ssl else MasterConnection,
        db=url.db,
        username=url.username,
        password=url.password,
        **settings,
    )
    return cast(Redis, client)


def _check_wait_timeout(client: Redis, timeout_ms: int) -> None:
    if timeout_ms <= 0:
        raise ValueError("WAIT timeout must be positive: WAIT n 0 blocks for ever")
    socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout and timeout_ms / 1000 + WAIT_MARGIN_S > socket_timeout:
        raise ValueError(
            f"WAIT timeout {timeout_ms} ms too close to the socket timeout ({socket_timeout} s): "
            f"at most {int((socket_timeout - WAIT_MARGIN_S) * 1000)} ms"
        )


async def _pipelined(client: Redis, first: Sequence[Any], replicas: int, timeout_ms: int) -> tuple[Any, int]:
    async with client.pipeline(transaction=False) as pipe:
        pipe.execute_command(*first)
        pipe.wait(replicas, timeout_ms)
        result, acked = await pipe.execute(raise_on_error=False)
    if isinstance(acked, Exception):
        raise acked
    return result, int(acked)


class MasterChangedError(redis_errors.ConnectionError):
    """A write went to a master that Sentinel has replaced since: it will be lost."""


async def _check_still_master(pool: SentinelConnectionPool, used: Any) -> None:
    current = await pool.get_master_address()  # type: ignore[no-untyped-call]
    if used is not None and tuple(used) != tuple(current):
        raise MasterChangedError(
            f"the write went to {used}, no longer the master ({current}); it will be lost"
        )


async def run_and_wait(
    client: Redis,
    script_sha: str,
    script_source: str,
    keys: Sequence[str],
    args: Sequence[Any],
    *,
    replicas: int,
    timeout_ms: int,
) -> tuple[Any, int]:
    """Run a Lua script, then WAIT for `replicas` replicas to have it; (result, replicas that did).

    WAIT waits for the replication offset its own connection's last command left (Redis 7.0: any
    command; 7.2+: the last write), so a WAIT on another pooled connection does not cover this
    write. The script and the WAIT go down one connection, pipelined: one round trip.
    With replicas=0, no WAIT.

    Fewer acknowledgements than asked for are returned as they are (the replica may be slow or
    down), unless the sentinels now name another master, or none: then the write went to a master
    that is being replaced and may be lost, and a ConnectionError (a 503) says so.
    """
    if replicas <= 0:
        try:
            return await client.evalsha(script_sha, len(keys), *keys, *args), 0
        except redis_errors.NoScriptError:
            return await client.eval(script_source, len(keys), *keys, *args), 0
    _check_wait_timeout(client, timeout_ms)
    pool = client.connection_pool
    # The master this write goes to, as far as the pool knows (None before its first connection).
    used = getattr(pool, "master_address", None)
    command: tuple[Any, ...] = ("EVALSHA", script_sha, len(keys), *keys, *args)
    result, acked = await _pipelined(client, command, replicas, timeout_ms)
    if isinstance(result, redis_errors.NoScriptError):
        # The script did not run, so nothing was waited for; the WAIT that went with it waited
        # only for this connection's earlier commands (up to timeout_ms if no replica is up).
        command = ("EVAL", script_source, len(keys), *keys, *args)
        result, acked = await _pipelined(client, command, replicas, timeout_ms)
    if isinstance(result, Exception):
        raise result
    if acked < replicas and isinstance(pool, SentinelConnectionPool):
        await _check_still_master(pool, used or pool.master_address)
    return result, acked
