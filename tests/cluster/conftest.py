"""A real 3-master Redis Cluster on loopback; the session tests run against it from this folder."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from web.embedded import Server, free_port, redis_binary, start_redis
from web.settings import Settings


@dataclasses.dataclass
class Cluster:
    nodes: list[Server]
    dirs: list[Path]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def restart(self, i: int) -> None:
        """Start node i again on its port, from its own nodes.conf and append-only file."""
        self.nodes[i] = start_cluster_node(self.dirs[i], self.nodes[i].port)


def cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def start_cluster_node(folder: Path, port: int) -> Server:
    # Without full coverage, the masters still up keep serving their slots while one is down.
    args = (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        "--cluster-require-full-coverage",
        "no",
    )
    return start_redis(folder, port=port, log_path=folder / "redis.log", args=args)


def wait_for_cluster_ok(port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout
        if "cluster_state:ok" in out:
            return
        time.sleep(0.1)
    raise AssertionError(f"cluster not ok: {out}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if redis_binary().startswith(str(Path(".venv").resolve())):
        pytest.skip("needs Debian's redis-server and redis-cli")
    base = tmp_path_factory.mktemp("cluster")
    dirs = [base / f"node{i}" for i in range(3)]
    ports = [cluster_port() for _ in dirs]
    nodes = []
    for folder, port in zip(dirs, ports, strict=True):
        nodes.append(start_cluster_node(folder, port))
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for_cluster_ok(ports[0])
    cluster = Cluster(nodes, dirs)
    yield cluster
    for node in cluster.nodes:
        node.stop()


@pytest.fixture(scope="session")
def redis_server(cluster: Cluster) -> Server:
    """Overrides the standalone server: every test in this folder talks to the cluster."""
    return cluster.nodes[0]


class InspectingCluster(RedisCluster):
    """For the tests' own look at the data: KEYS answered from every master, not one."""

    def keys(self, pattern: str = "*", **kwargs: object) -> list[str]:  # type: ignore[override]
        return sorted(self.scan_iter(pattern))

    def info(self, section: str | None = None, *args: object, **kwargs: object) -> dict[str, Any]:  # type: ignore[override]
        """Command statistics summed over the masters, for tests.helpers.servers.counting_commands."""
        per_node = super().info(section, target_nodes=self.PRIMARIES)
        if section != "commandstats":
            return per_node  # type: ignore[no-any-return]
        total: dict[str, dict[str, int]] = {}
        for stats in per_node.values():
            for name, figures in stats.items():
                total.setdefault(name, {"calls": 0})["calls"] += figures["calls"]
        return total


@pytest.fixture
def redis(cluster: Cluster) -> Iterator[RedisCluster]:
    client = InspectingCluster.from_url(cluster.url, decode_responses=True)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, redis_cluster=True)
