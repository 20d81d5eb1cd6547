"""rediss:// URLs: the app talks to Redis over TLS (a redis-server with a self-signed certificate)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_client, running, signup
from web.embedded import Server, free_port, start_redis
from web.settings import Settings


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    tls = (
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
    )
    server = start_redis(port=port, args=tls)
    yield server, cert
    server.stop()


async def test_sessions_over_tls(settings: Settings, tls_redis: tuple[Server, Path]) -> None:
    server, cert = tls_redis
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={cert}"
    async with running(settings, redis_url=url) as app, make_client(app) as client:
        assert (await signup(client)).status_code == 303
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/healthz")).json() == {"redis": "ok", "mongodb": "ok"}
