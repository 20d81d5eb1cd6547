"""The Redis client: connecting (single server, Cluster), and Lua scripts that survive NOSCRIPT."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisClient = Redis | RedisCluster
log = logging.getLogger(__name__)

# Short timeouts: when Redis is down, the user hears so within about a second.
TIMEOUT_S = 1.0
POOL_SIZE = 100


Call = tuple[tuple[Any, ...], "asyncio.Future[Any]"]  # a command's arguments, and its caller's answer
# Commands per pipeline: a timer covers each exchange, connecting included, so an exchange must
# stay small enough for a busy Redis to answer it well within the socket timeout.
MAX_BATCH = 64


class Batcher:
    """The commands that callers send in one turn of the event loop go to Redis as one pipeline.

    Under load, many requests reach their Redis call in the same turn of the event loop. Sent
    one by one through the client, each pays for a connection from the pool, a write, a wakeup
    for its reply, and redis-py's per-command bookkeeping (retry wrapper, timers, hooks): that
    fixed cost was about half of a signed-in page's CPU. Here the commands of one turn are
    written together on one connection and the replies read in order, each handed to its caller.
    Each command is still atomic on its own, and nothing ties them together (no MULTI): an error
    reply (NOSCRIPT, say) or an argument that cannot be sent reaches only its own caller.
    Commands that a broken connection left unanswered are sent once more on another
    connection, as the client's Retry(..., 1) would. Each reply is read by redis-py itself; one
    timer, of the socket timeout, bounds the whole exchange, connecting included.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.pending: list[Call] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sending: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references
        self.encoder = pool.get_encoder()  # type: ignore[no-untyped-call]
        self.encoding = (self.encoder.encoding, self.encoder.encoding_errors)

    def pack(self, args: tuple[Any, ...]) -> bytes:
        """One command in RESP, as redis-py's pack_command writes it, in under half the time.

        The types the app sends (str, int, bytes) are written here; any other goes through
        redis-py's own encoder, so that a float is written as it would be, and a bool or None
        raises the same DataError. The command's name must be one word (EVALSHA, not SCRIPT LOAD).
        """
        encoding, errors = self.encoding
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            kind = type(arg)
            if kind is str:
                arg = arg.encode(encoding, errors)
            elif kind is int:
                arg = b"%d" % arg
            elif kind is not bytes:
                arg = self.encoder.encode(arg)
            out += (b"$%d\r\n" % len(arg), arg, b"\r\n")
        return b"".join(out)

    def call(self, *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # first use, or a loop that stopped with calls queued
            self.loop, self.pending = loop, []
        if not self.pending:
            loop.call_soon(self._flush)  # after the callbacks already due in this turn
        future = loop.create_future()
        self.pending.append((args, future))
        if len(self.pending) >= MAX_BATCH:
            self._flush()
        return future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        task = asyncio.ensure_future(self._send(batch))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            left = await self._exchange(batch, last=False)
            if left:
                await self._exchange(left, last=True)
        except BaseException as exc:  # cancelled, or a bug: no caller may wait for ever
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            raise

    async def _exchange(self, batch: list[Call], *, last: bool) -> list[Call]:
        """Answer every call of the batch; return those a broken connection left unanswered."""
        sent = batch  # until packed: a failure to connect leaves every call unanswered
        answered = 0
        connection: AbstractConnection | None = None
        limit = self.pool.connection_kwargs.get("socket_timeout")
        # No timer of its own for each reply (inf: redis-py's "no timeout") when the exchange's
        # covers them all; that one cuts the connection too (read_response disconnects).
        each = math.inf if limit else None
        try:
            async with asyncio.timeout(limit):
                connection = await self.pool.get_connection()  # type: ignore[no-untyped-call]
                packed: list[bytes] = []
                sent = []
                for call in batch:
                    try:
                        packed.append(self.pack(call[0]))
                    except DataError as exc:  # an argument Redis cannot take: that caller's bug
                        _settle(call[1], exc)
                        continue
                    sent.append(call)
                await connection.send_packed_command(packed, check_health=False)
                for _, future in sent:
                    try:
                        reply = await connection.read_response(timeout=each)
                    except ResponseError as exc:  # this command's own error; the stream is intact
                        reply = exc
                    answered += 1
                    _settle(future, reply)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:  # TimeoutError is an OSError
            if not last:
                return sent[answered:]
            failure = _as_redis_error(exc)
            for _, future in sent[answered:]:
                _settle(future, failure)
        finally:
            if connection is not None:
                await self.pool.release(connection)
        return []


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # its caller gave up
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _as_redis_error(exc: Exception) -> Exception:
    """What redis-py itself raises for a timeout or a socket error: the app's outage errors."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return exc
    error: Exception
    if isinstance(exc, TimeoutError):
        error = RedisTimeoutError("Timeout talking to Redis")
    else:
        error = RedisConnectionError(f"Error talking to Redis: {exc!r}")
    error.__cause__ = exc
    return error


class Pool(BlockingConnectionPool):
    """redis-py's blocking pool, with a fast lane for the usual case.

    On every command redis-py's get_connection() and release() take an asyncio.Condition, arm a
    timer for the wait, bind their arguments to warn about deprecated ones, dispatch events and
    record metrics for OpenTelemetry: a quarter of a signed-in page's Redis call. None of that is
    needed when a connection is idle and nobody is waiting for one: asyncio runs the lines
    between two awaits without interruption. Otherwise the base class waits, and wakes waiters.
    """

    waiting = 0  # callers inside the base class's get_connection()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batcher = Batcher(self)

    async def get_connection(self) -> AbstractConnection:  # type: ignore[override]
        if self._available_connections and not self.waiting and not self._in_maintenance:
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)  # reconnects one that Redis closed
            except BaseException:
                await self.release(connection)
                raise
            return connection
        self.waiting += 1
        try:
            # Undecorated: the same code without the per-call deprecation check.
            return await BlockingConnectionPool.get_connection.__wrapped__(self)  # type: ignore[attr-defined,no-any-return]
        finally:
            self.waiting -= 1

    async def release(self, connection: AbstractConnection) -> None:
        if self.waiting or self._in_maintenance:
            await super().release(connection)  # under the Condition, notifying a waiter
            return
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)


def connect_redis(url: str, *, cluster: bool) -> RedisClient:
    """A client for REDIS_URL: a pool of decoded-reply connections that fail fast."""
    if url.startswith("redis+sentinel"):
        from web.sentinel import connect_sentinel, parse_sentinel_url  # builds on this module

        return connect_sentinel(parse_sentinel_url(url))
    # One quick retry: the first command after a Redis restart meets a dead pooled connection.
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": TIMEOUT_S / 2,
        "socket_timeout": TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
    }
    if cluster:
        return RedisCluster.from_url(url, max_connections=POOL_SIZE, **options)
    pool = Pool.from_url(url, max_connections=POOL_SIZE, timeout=TIMEOUT_S, **options)
    return Redis(connection_pool=pool)


class Script:
    """A Lua script run by its SHA, sent whole (EVAL) to a server that has not seen it yet.

    redis-py's own Script answers NOSCRIPT with SCRIPT LOAD, which a cluster client sends to
    every master: one master down would then fail requests for keys on the others too.
    EVAL goes only to the master that owns the key, and caches the script there.
    """

    def __init__(self, redis: RedisClient, source: str, *, replicas: int = 0, timeout_ms: int = 500) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        # Writes that must survive a failover wait until this many replicas have them.
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        # Connections from our pools (not a cluster's) take part in the pipelining of one turn.
        self.batcher: Batcher | None = getattr(getattr(redis, "connection_pool", None), "batcher", None)

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if self.replicas and isinstance(self.redis, Redis):
            from web.sentinel import run_and_wait  # builds on this module

            result, acked = await run_and_wait(
                self.redis,
                self.sha,
                self.source,
                keys,
                args,
                replicas=self.replicas,
                timeout_ms=self.timeout_ms,
            )
            if acked < self.replicas:
                # Written, but on fewer replicas than asked: a failover now could lose it.
                log.warning(
                    "WAIT: %d of %d replicas had the write within %d ms",
                    acked,
                    self.replicas,
                    self.timeout_ms,
                )
            return result
        try:
            return await self._run("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._run("EVAL", self.source, len(keys), *keys, *args)

    async def _run(self, *command: Any) -> Any:
        if self.batcher is not None:
            return await self.batcher.call(*command)
        return await self.redis.execute_command(*command)
