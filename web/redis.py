"""The Redis client: connecting (single server, Cluster), and Lua scripts that survive NOSCRIPT."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from collections.abc import Coroutine
from typing import Any, cast

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisClient = Redis | RedisCluster
log = logging.getLogger(__name__)

# Short timeouts: when Redis is down, the user hears so within about a second.
TIMEOUT_S = 1.0
POOL_SIZE = 100


# A command's arguments, its caller's answer, and how many connections it has been sent on.
Call = tuple[tuple[Any, ...], "asyncio.Future[Any]", int]
# Commands per write: a turn with more callers than this goes out in several writes, the first
# as soon as it is full, so that Redis works on it while the app prepares the rest of the turn.
# With one write per turn, a turn of 30 page loads left the app idle while Redis ran all 30
# scripts: 6% of the time at 32 connections; 16 leaves under 1%, and writes stay few.
MAX_BATCH = 16
# How long one connection carries the pipeline before the next is taken from the pool: the pool
# decides then whether it still leads to the master (web/sentinel.py asks at most once a second).
# Once a second, one turn's commands wait for that (a pooled connection: no new socket).
PIPE_LIFETIME_S = 1.0


class Batcher:
    """The commands that callers send in one turn of the event loop go to Redis as one write,
    on one connection that carries every turn's commands, one after another (a pipeline).

    Under load, many requests reach their Redis call in the same turn of the event loop. Sent
    one by one through the client, each pays for a connection from the pool, a write, a wakeup
    for its reply, and redis-py's per-command bookkeeping (retry wrapper, timers, hooks): that
    fixed cost was about half of a signed-in page's CPU. Even one task per turn reading the
    replies through redis-py's streams was a tenth of a page. Here a connection from the pool is
    lent to a `_Pipe`, which takes over its socket: the commands of a turn are written in one
    go, and each reply, as it arrives, is parsed (hiredis) and handed to its caller in order, in
    the socket's own callback. Connecting, AUTH, TLS and finding the master stay redis-py's.

    Each command is still atomic on its own, and nothing ties them together (no MULTI): an error
    reply (NOSCRIPT, say) or an argument that cannot be sent reaches only its own caller.
    Commands that a broken connection left unanswered are sent once more on another
    connection, as the client's Retry(..., 1) would. Every write must be answered within the
    socket timeout, or the connection is cut (its commands then get their one more try).
    After PIPE_LIFETIME_S the next commands wait for a new pipe, on a connection the pool hands
    out after its own checks (is this still the master?); the old one hands its connection back
    once its replies are in.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.pending: list[Call] = []  # this turn's
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pipe: _Pipe | None = None
        self.waiting: list[Call] = []  # for a pipe that is being opened
        self.opening: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references
        self.encoder = pool.get_encoder()  # type: ignore[no-untyped-call]
        self.encoding = (self.encoder.encoding, self.encoder.encoding_errors)
        self.timeout: float | None = pool.connection_kwargs.get("socket_timeout")

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
            self.loop, self.pending, self.pipe, self.waiting, self.opening = loop, [], None, [], None
        if not self.pending:
            loop.call_soon(self._flush)  # after the callbacks already due in this turn
        future = loop.create_future()
        self.pending.append((args, future, 0))
        if len(self.pending) >= MAX_BATCH:
            self._flush()
        return future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            self._send(batch)

    def _send(self, calls: list[Call]) -> None:
        pipe = self.pipe
        # Past its lifetime, a pipe takes no more: these wait for its successor, which the pool
        # hands out only once it knows where the master is (after a failover, no longer there).
        if pipe is None or pipe.lost or pipe.born + PIPE_LIFETIME_S < pipe.loop.time():
            self.waiting += calls
            self._open()
            return
        pipe.send(calls)

    def _open(self) -> None:
        if self.opening is None:
            self.opening = self._spawn(self._open_pipe())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _open_pipe(self) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        connection = await self.pool.get_connection()  # type: ignore[no-untyped-call]
                        if not connection.is_connected:  # a pool that hands out closed ones
                            await connection.connect()
                    break
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    # A failure to connect counts as a try: calls that had theirs fail now.
                    self._fail([c for c in self.waiting if c[2]], _as_redis_error(exc))
                    self.waiting = [(a, f, 1) for a, f, tries in self.waiting if not tries and not f.done()]
                    if not self.waiting:
                        return
            old, self.pipe = self.pipe, _Pipe(self, connection)
            if old is not None:
                old.retire()
            waiting, self.waiting = self.waiting, []
            if waiting:
                self.pipe.send(waiting)
        except BaseException as exc:  # cancelled, or a bug: no caller may wait for ever
            self._fail(self.waiting, exc)
            self.waiting = []
            raise
        finally:
            self.opening = None

    def lost(self, pipe: _Pipe, unanswered: list[Call], error: Exception) -> None:
        """A pipe's connection broke: its unanswered calls go out once more, or fail."""
        if self.pipe is pipe:
            self.pipe = None
        self._fail([c for c in unanswered if c[2]], error)
        again = [(args, future, 1) for args, future, tries in unanswered if not tries and not future.done()]
        if again:
            self._send(again)
        self._spawn(pipe.give_back(broken=True))

    @staticmethod
    def _fail(calls: list[Call], error: BaseException) -> None:
        for _, future, _ in calls:
            if isinstance(error, asyncio.CancelledError):
                if not future.done():
                    future.cancel()
            else:
                _settle(future, error)


class _Pipe(asyncio.Protocol):
    """One pooled connection's socket, taken over from redis-py's stream for the pipeline."""

    def __init__(self, batcher: Batcher, connection: AbstractConnection) -> None:
        self.batcher = batcher
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.born = self.loop.time()
        self.waiters: collections.deque[Call] = collections.deque()  # sent, in order, unanswered
        self.sent = self.answered = 0  # commands, since the pipe opened
        self.deadlines: collections.deque[tuple[int, float]] = collections.deque()  # (sent by then, when)
        self.timer: asyncio.TimerHandle | None = None
        self.error: Exception | None = None  # why it was cut, if it was
        self.lost = self.retiring = False
        encoding, errors = batcher.encoding
        decoding = {"encoding": encoding, "errors": errors} if connection.encoder.decode_responses else {}
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=connection._parser.parse_error,  # as redis-py's own: NOSCRIPT -> NoScriptError
            notEnoughData=NOT_ENOUGH_DATA,
            **decoding,
        )
        writer = connection._writer
        if writer is None:  # get_connection() hands out connected ones
            raise RedisConnectionError("Redis connection closed")
        self.transport = cast(asyncio.Transport, writer.transport)
        self.stream = self.transport.get_protocol()  # redis-py's; it gets the socket back
        self.transport.set_protocol(self)

    def send(self, calls: list[Call]) -> None:
        packed = []
        for call in calls:
            try:
                packed.append(self.batcher.pack(call[0]))
            except DataError as exc:  # an argument Redis cannot take: that caller's bug
                _settle(call[1], exc)
                continue
            self.waiters.append(call)
        if not packed:
            return
        self.transport.write(b"".join(packed))
        self.sent += len(packed)
        if self.batcher.timeout is not None:
            self.deadlines.append((self.sent, self.loop.time() + self.batcher.timeout))
            if self.timer is None:
                self.timer = self.loop.call_at(self.deadlines[0][1], self._expire)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not NOT_ENOUGH_DATA:
                _settle(self.waiters.popleft()[1], reply)  # a caller that gave up: dropped
                self.answered += 1
        except (InvalidResponse, IndexError) as exc:  # garbled, or a reply nobody asked for
            self._cut(RedisConnectionError(f"Protocol error from Redis: {exc!r}"))
            return
        if self.retiring and not self.waiters:
            self.batcher._spawn(self.give_back(broken=False))

    def _expire(self) -> None:
        self.timer = None
        while self.deadlines and self.deadlines[0][0] <= self.answered:
            self.deadlines.popleft()
        if not self.deadlines or self.lost:
            return
        if self.deadlines[0][1] <= self.loop.time():
            self._cut(RedisTimeoutError("Timeout reading from Redis"))
        else:
            self.timer = self.loop.call_at(self.deadlines[0][1], self._expire)

    def _cut(self, error: Exception) -> None:
        self.error = error
        self.transport.abort()  # connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.connection_lost(exc)  # redis-py's disconnect() waits for it to hear
        if self.lost:
            return
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
        error = self.error or _as_redis_error(exc or ConnectionError("Connection closed by Redis"))
        unanswered = list(self.waiters)
        self.waiters.clear()
        self.batcher.lost(self, unanswered, error)

    def retire(self) -> None:
        """Take no more commands; hand the connection back once every reply is in."""
        self.retiring = True
        if not self.waiters and not self.lost:
            self.batcher._spawn(self.give_back(broken=False))

    async def give_back(self, *, broken: bool) -> None:
        if not broken:
            if self.lost or self.transport.get_protocol() is not self:
                return  # already handed back, or lost (which hands it back itself)
            self.lost = True
            if self.timer is not None:
                self.timer.cancel()
            self.transport.set_protocol(self.stream)
        else:
            await self.connection.disconnect(nowait=True)
        await self.batcher.pool.release(self.connection)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # its caller gave up
        return
    if isinstance(outcome, BaseException):
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
