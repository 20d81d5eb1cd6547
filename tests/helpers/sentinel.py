"""A real Sentinel topology on loopback: one master, one replica, three sentinels.

Every process is a child of the test process tied to its life (PR_SET_PDEATHSIG, through
web.embedded), and `topology()` stops them all when its block ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from web.embedded import Server, free_port, redis_binary, spawn, start_redis

SERVICE = "mymaster"
# The master is subjectively down after this long without a reply to a sentinel's PING.
DOWN_AFTER_MS = 1000
# Also the wait (twice this) before a sentinel that voted may try another failover.
FAILOVER_TIMEOUT_MS = 3000
READY_WITHIN = 15.0
FAILOVER_WITHIN = 30.0

Address = tuple[str, int]


@dataclass(frozen=True)
class Failover:
    """What the sentinels did, in seconds since the master was killed (or the failover asked for)."""

    old: Address
    new: Address
    first_seconds: float  # one sentinel names the new master: clients can find it from here on
    all_seconds: float  # every sentinel names it


@dataclass
class Topology:
    """The processes, by role. After a failover `master` is the promoted node, `replica` the old master."""

    master: Server
    replica: Server
    sentinels: list[Server]
    folder: Path
    started: list[Server] = field(default_factory=list)  # every process ever started, for stop()

    def url(self, scheme: str = "redis+sentinel", db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{scheme}://{hosts}/{SERVICE}/{db}"

    @property
    def master_address(self) -> Address:
        return ("127.0.0.1", self.master.port)

    def data_client(self, server: Server) -> Redis:
        """A plain client straight to one data node, for looking at what it holds."""
        return Redis(port=server.port, decode_responses=True, socket_timeout=5)

    def kill_master(self) -> float:
        """SIGKILL the master (no goodbye to anyone); return the monotonic time of the kill."""
        killed = time.monotonic()
        self.master.process.send_signal(signal.SIGKILL)
        self.master.process.wait()
        return killed

    async def master_addresses(self) -> list[Address | None]:
        """What each sentinel answers to GET-MASTER-ADDR-BY-NAME (None: no answer)."""

        async def ask(port: int) -> Address | None:
            client = AsyncRedis(port=port, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
            try:
                reply: Any = await client.sentinel_get_master_addr_by_name(SERVICE)
            except RedisError:
                return None
            finally:
                await client.aclose()
            return (str(reply[0]), int(reply[1])) if reply else None

        return list(await asyncio.gather(*(ask(s.port) for s in self.sentinels)))

    async def wait_for_failover(
        self, old: Address, since: float, within: float = FAILOVER_WITHIN
    ) -> Failover:
        """Poll the sentinels until all of them name one master other than `old`; time it from `since`."""
        first: float | None = None
        answers: list[Address | None] = []
        while time.monotonic() < since + within:
            answers = await self.master_addresses()
            moved = [a for a in answers if a is not None and a != old]
            now = time.monotonic()
            if moved and first is None:
                first = now - since
            if len(moved) == len(answers) and len(set(moved)) == 1:
                assert first is not None
                if self.replica.port == moved[0][1]:
                    self.master, self.replica = self.replica, self.master
                return Failover(old, moved[0], first, now - since)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no failover within {within:.0f} s: sentinels say {answers}")

    def restart_old_master(self) -> Server:
        """Start the killed old master again on its port: empty, and a master until Sentinel demotes it."""
        assert self.replica.process.poll() is not None, "the old master is still running"
        self.replica = _start_data_node(self.folder, self.replica.port, "old-master")
        self.started.append(self.replica)
        return self.replica

    def running_pids(self) -> list[int]:
        """Every process of the topology still alive (none, once stopped)."""
        return [s.process.pid for s in self.started if s.process.poll() is None and _exists(s.process.pid)]

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop(timeout=5)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_data_node(folder: Path, port: int, name: str, *args: str) -> Server:
    # Its own directory: a replica's full sync writes an RDB file there, never into the cwd.
    home = folder / f"{name}-{port}"
    home.mkdir(parents=True, exist_ok=True)
    # No 5 s wait for more replicas before a (diskless) full sync starts.
    options = ("--dir", str(home), "--repl-diskless-sync-delay", "0", *args)
    server = start_redis(port=port, log_path=home / "redis.log", args=options)
    server.name = name
    return server


def _sentinel_config(home: Path, port: int, master: Server, replica: Server, peers: dict[int, str]) -> Path:
    """A sentinel that already knows the replica and its peers: no 2 s hello round before it is useful."""
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        "daemonize no",
        f"dir {home}",
        f"sentinel myid {peers[port]}",
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2",
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {SERVICE} 1",
        f"sentinel known-replica {SERVICE} 127.0.0.1 {replica.port}",
    ]
    lines += [f"sentinel known-sentinel {SERVICE} 127.0.0.1 {p} {i}" for p, i in peers.items() if p != port]
    home.mkdir(parents=True, exist_ok=True)
    path = home / "sentinel.conf"  # a sentinel rewrites its file: one each, writable
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_sentinel(home: Path, port: int, config: Path) -> Server:
    # `redis-server <config> --sentinel`: the config file must come first, which start_redis cannot do.
    argv = [redis_binary(), str(config), "--sentinel"]
    server = spawn("sentinel", argv, port, f"redis://127.0.0.1:{port}", home / "sentinel.log")
    return server


def start_topology(folder: Path) -> Topology:
    """Start master, replica and three sentinels; return once a failover could succeed."""
    started: list[Server] = []
    try:
        master = _start_data_node(folder, free_port(), "master")
        started.append(master)
        replica = _start_data_node(
            folder, free_port(), "replica", "--replicaof", "127.0.0.1", str(master.port)
        )
        started.append(replica)
        peers = {free_port(): secrets.token_hex(20) for _ in range(3)}
        for port in peers:
            home = folder / f"sentinel-{port}"
            started.append(_start_sentinel(home, port, _sentinel_config(home, port, master, replica, peers)))
        topology = Topology(master, replica, started[2:], folder, started)
        wait_until_ready(topology)
    except BaseException:
        for server in reversed(started):
            server.stop(timeout=5)
        raise
    return topology


def _not_ready(topology: Topology) -> str | None:
    """What is still missing before a failover could work, or None."""
    for server in [topology.master, topology.replica]:
        with topology.data_client(server) as client:
            if not client.ping():
                return f"{server.name} does not answer PING"
    with topology.data_client(topology.replica) as client:
        if client.info("replication").get("master_link_status") != "up":
            return "the replica's link to the master is not up"
    for sentinel in topology.sentinels:
        with Redis(port=sentinel.port, decode_responses=True, socket_timeout=5) as client:
            master = client.sentinel_master(SERVICE)
            if master["flags"] != "master" or master["num-other-sentinels"] != 2:
                return f"sentinel {sentinel.port} sees the master as {master}"
            # The replica's link status as a sentinel last saw it can be 10 s old (INFO period):
            # the replica's own word, above, is the one that counts; here only "connected".
            replicas = [r["flags"] for r in client.sentinel_slaves(SERVICE)]
            if replicas != ["slave"]:
                return f"sentinel {sentinel.port} sees replicas {replicas}"
            if any(p["is_disconnected"] for p in client.sentinel_sentinels(SERVICE)):
                return f"sentinel {sentinel.port} is not yet connected to its peers"
    return None


def wait_until_ready(topology: Topology, within: float = READY_WITHIN) -> None:
    deadline = time.monotonic() + within
    missing: str | None = "not checked"
    while time.monotonic() < deadline:
        missing = _not_ready(topology)
        if missing is None:
            return
        time.sleep(0.05)
    raise AssertionError(f"sentinel topology not ready within {within:.0f} s: {missing}")


@contextlib.contextmanager
def topology(folder: Path) -> Iterator[Topology]:
    """A fresh topology for the block, stopped afterwards whatever happens."""
    started = start_topology(folder)
    try:
        yield started
    finally:
        started.stop()


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], within: float, what: str) -> float:
    """Poll `condition` until true; return the seconds it took, or fail naming `what`."""
    start = time.monotonic()
    while time.monotonic() < start + within:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within} s: {what}")
