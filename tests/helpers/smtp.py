"""A real SMTP server for the tests: aiosmtpd in a thread, keeping what it receives in memory.

It can be stopped and started again on the same port (an SMTP outage and its end), and told
to refuse recipients or messages with a given reply (4xx to try later, 5xx for good).
"""

from __future__ import annotations

import asyncio
import email.policy
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller

from web.embedded import free_port
from web.mail.smtp import SmtpConfig

_LINK = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True)
class Received:
    """One message as the server took it: the parsed message and its envelope."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def text(self) -> str:
        return _part(self.message, "plain")

    @property
    def html(self) -> str:
        return _part(self.message, "html")


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    return str(part.get_content()) if part is not None else ""


def links(message: Received | EmailMessage) -> list[str]:
    """Every http(s) link in the text/plain part, decoded, in order."""
    if isinstance(message, Received):
        message = message.message
    # A link that ends a sentence keeps its full stop outside.
    return [link.rstrip(".,;:!?)") for link in _LINK.findall(_part(message, "plain"))]


class _Handler:
    def __init__(self, owner: MailServer) -> None:
        self.owner = owner

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.owner.rcpt_delay:
            # A slow server, not synchronisation: the sender must cope with it.
            await asyncio.sleep(self.owner.rcpt_delay)
        reply = self.owner.rcpt_replies.get(address) or self.owner.rcpt_replies.get("*")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.owner.data_delay:
            # A slow server, not synchronisation: the sender must cope with it.
            await asyncio.sleep(self.owner.data_delay)
        if self.owner.data_reply:
            return self.owner.data_reply
        parsed = BytesParser(policy=email.policy.default).parsebytes(envelope.original_content)
        assert isinstance(parsed, EmailMessage)
        self.owner._add(Received(parsed, envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


class MailServer:
    """An SMTP server on a loopback port of its own; use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        # Replies to give instead of accepting: by recipient address, or "*" for every one.
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None  # e.g. "554 5.7.1 rejected as spam"
        self.rcpt_delay = 0.0  # seconds the server takes to answer each RCPT
        self.data_delay = 0.0  # seconds the server takes to answer DATA (once it has the message)
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    def __enter__(self) -> MailServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def config(self, **changes: Any) -> SmtpConfig:
        """How to reach this server (plain SMTP, no STARTTLS offered)."""
        return SmtpConfig(**{"host": self.host, "port": self.port, "timeout": 5.0, **changes})

    def start(self) -> None:
        """Listen (again, on the same port)."""
        if self._controller is None:
            # A fresh controller each time: a stopped one has closed its event loop.
            controller = Controller(
                _Handler(self),
                hostname=self.host,
                port=self.port,
                server_hostname="localhost",
                ready_timeout=5,
            )
            controller.start()
            self._controller = controller

    def stop(self) -> None:
        """Stop listening and drop open connections: to clients, SMTP is down."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _add(self, received: Received) -> None:
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()

    @property
    def received(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def clear(self) -> None:
        with self._changed:
            self._received.clear()

    async def wait_for(
        self, expected: int | Callable[[list[Received]], bool], within: float = 10.0
    ) -> list[Received]:
        """Everything received, once `expected` messages (or the condition) are; fail after `within` s."""
        check = _condition(expected)
        deadline = time.monotonic() + within
        while not check(received := self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {within} s for {expected!r}; received {len(received)}")
            await asyncio.sleep(0.01)  # polling, bounded: the messages arrive on another thread
        return received

    def wait_for_sync(
        self, expected: int | Callable[[list[Received]], bool], within: float = 10.0
    ) -> list[Received]:
        """wait_for, for tests that do not run an event loop."""
        check = _condition(expected)
        with self._changed:
            if not self._changed.wait_for(lambda: check(list(self._received)), within):
                raise AssertionError(f"waited {within} s for {expected!r}; received {len(self._received)}")
            return list(self._received)


def _condition(expected: int | Callable[[list[Received]], bool]) -> Callable[[list[Received]], bool]:
    if isinstance(expected, int):
        return lambda received: len(received) >= expected
    return expected
