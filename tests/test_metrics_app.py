"""GET /metrics on the app itself: what a sign-in and a page view count, and who may read it."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.types import Message

from tests.conftest import form_post_scope, login, make_client, running, signup
from web.settings import Settings

TOKEN = "metrics-token-0123456789abcdef0123456789"


def value(text: str, sample: str) -> float:
    """The value of one sample line (name and labels as written), 0 if absent."""
    match = re.search(rf"^{re.escape(sample)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_what_the_app_does(app: Starlette) -> None:
    async with make_client(app) as c:
        before = (await c.get("/metrics")).text
        await signup(c)
        await c.get("/")
        await c.post("/logout")
        await login(c, password="not the password")
        await login(c)
        after = (await c.get("/metrics")).text
    assert (
        value(after, 'web_sign_ins_total{outcome="ok"}') - value(before, 'web_sign_ins_total{outcome="ok"}')
        == 1
    )
    wrong = 'web_sign_ins_total{outcome="wrong_password"}'
    assert value(after, wrong) - value(before, wrong) == 1
    assert value(after, 'web_sessions_created_total{reason="signup"}') >= 1
    assert value(after, 'web_sessions_ended_total{reason="sign_out"}') >= 1
    # Route templates, never raw paths: a revoke URL's handle does not become a label.
    assert 'web_requests_total{method="GET",route="/",status="200"}' in after
    assert "web_request_duration_seconds_bucket" in after
    assert "web_bcrypt_queue_length" in after and "web_mail_queue_depth" in after


async def test_metrics_are_for_trusted_addresses_or_the_token(settings: Settings) -> None:
    proxy = (ipaddress.ip_network("127.0.0.1/32"),)
    async with running(settings, trusted_proxies=proxy, metrics_token=TOKEN) as app, make_client(app) as c:
        assert (await c.get("/metrics")).status_code == 200  # loopback
        outside = {"X-Forwarded-For": "203.0.113.7"}
        refused = await c.get("/metrics", headers=outside)
        assert refused.status_code == 404
        assert refused.text == (await c.get("/no-such-page", headers=outside)).text  # like any unknown page
        assert (
            await c.get("/metrics", headers={**outside, "Authorization": "Bearer wrong"})
        ).status_code == 404
        allowed = await c.get("/metrics", headers={**outside, "Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200 and allowed.headers["cache-control"] == "no-store"


async def test_a_client_that_leaves_mid_body_is_no_server_error(
    app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    """A form post whose client goes away before its body is in (a phone losing signal, or
    someone holding connections open to set off the error alert): no traceback, no 500 counted,
    but a 499, and nothing sent."""
    scope = form_post_scope("/login", [(b"content-length", b"1000")])
    sent: list[Message] = []
    messages: Iterator[Message] = iter(())

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    async with make_client(app) as c:
        before = (await c.get("/metrics")).text
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                messages = iter(
                    [
                        {"type": "http.request", "body": b"email=a", "more_body": True},
                        {"type": "http.disconnect"},
                    ]
                )
                await app(scope, receive, send)
        after = (await c.get("/metrics")).text
    assert sent == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    gone = 'web_requests_total{method="POST",route="/login",status="499"}'
    error = 'web_requests_total{method="POST",route="/login",status="500"}'
    assert value(after, gone) - value(before, gone) == 3
    assert value(after, error) == value(before, error)
