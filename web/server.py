"""Serving the app with uvicorn: the production entry point (`python -m web.server`, the
Procfile) and the one `python -m web` uses after starting its embedded services.

Uvicorn's httptools parser accepts request headers of any size (a 16 MiB Cookie header is
buffered whole); the protocol below refuses more than MAX_HEADER_BYTES with a 431.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from web.app import create_app, settle_heap
from web.metrics import multiprocess_dir
from web.settings import Settings, SettingsError

MAX_HEADER_BYTES = 32 * 1024  # request line and headers together; browsers send a few KiB
REQUEST_TIMEOUT_S = 30.0  # for a whole request to arrive; a full 1 MiB body needs 35 KB/s


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops, uvicorn answers (see send_400_response)."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a cap on the bytes of a request's head and a deadline for each request.

    The cap (MAX_HEADER_BYTES, 431) uses two counts, because a head arrives in many reads or in
    one: the bytes of the reads made while it was incomplete (a bound that catches a head that
    never ends; the read it began in counts whole, unless the previous request's body was in
    it) and, once it is in and only if the reads could hold that much, the bytes of its URL and
    headers (exact, which catches a head that came whole in one read). No per-header work.

    The deadline: a request must have arrived whole, head and body, within `request_timeout`
    of its first byte (a new connection, of its opening; bytes after an answer, of their
    arrival). Uvicorn has no such limit, so a client sending a byte now and then held a
    connection, and up to a megabyte of body, for as long as it liked. Armed only when a read
    ends with a request incomplete: no timer for the usual one. Time while the server is not
    reading (a pipelined request waiting its turn) does not count. And a client that stops
    reading the answer for `request_timeout` is cut off: its task would wait on it for ever.

    Trailers (header fields after a chunked body) are dropped, not appended to the request's
    headers as uvicorn does, and cut off past the same cap: they had no size limit at all.
    When the connection is lost, every request on it is told, not only the newest: a pipelined
    one being answered would otherwise write to a closed transport (a traceback, a 500).
    """

    request_timeout = REQUEST_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # None once the headers of the current request are in
        self._bound = 0  # bytes of the reads the current head may span
        self._too_big = False
        self._read = 0  # bytes in the read being parsed
        self._ended_in_read = False  # a request ended in it
        self._waiting = True  # for (the rest of) a request
        self._began = False  # a request's first bytes are in
        self._deadline: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None  # the client is not reading our answer
        self._cycles: list[RequestResponseCycle] = []  # those not answered yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._stalled is not None:
            self._stalled.cancel()
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        # Somewhere in the read being parsed: all of it counts, unless a request ended earlier
        # in it (its body may be most of it); then this head counts from the next read on.
        self._head_bytes = 0 if self._ended_in_read else self._read
        self._bound = self._read
        self._waiting = self._began = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        if self._bound > MAX_HEADER_BYTES and _head_size(self.url, self.headers) > MAX_HEADER_BYTES:
            self._too_big = True
            raise HeadTooLarge  # before the request reaches the app
        super().on_headers_complete()
        # Where uvicorn's on_header puts what comes next (trailers): counted, never kept.
        self.headers = _Trailers(self, self.headers)  # type: ignore[assignment]
        if self.cycle is not None:
            self._cycles = [c for c in self._cycles if not c.response_complete]
            self._cycles.append(self.cycle)

    def on_message_complete(self) -> None:
        self._waiting = self._began = False
        self._ended_in_read = True
        self._disarm()
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        self._read, self._ended_in_read = len(data), False
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            self._bound += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        # Checked after parsing, so a read that holds the headers and the start of a body does
        # not count the body; a head still incomplete past the limit is refused.
        if self._head_bytes is not None and self._head_bytes > MAX_HEADER_BYTES:
            self._refuse()
        elif self._waiting or self.cycle is None or self.cycle.response_complete:
            self._arm()  # a request under way, or bytes after the last answer (a CRLF, a late body)

    def send_400_response(self, msg: str) -> None:
        """Uvicorn's answer to a parser error; HeadTooLarge is one, and gets its 431."""
        if self._too_big:
            self._refuse()
        elif not self.transport.is_closing():  # trailers past the cap: already cut off
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self._answer(b"431 Request Header Fields Too Large", b"Request header fields too large.\r\n")
        self.transport.close()

    def _answer(self, status: bytes, text: bytes) -> None:
        """A plain answer written before the app has the request (it never will), then close."""
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, len(text), text)
        )

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = asyncio.get_running_loop().call_later(self.request_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the server is not reading: the client is not late
            self._arm()
            return
        if self._began and self._head_bytes is not None:  # part of a head (no byte at all: hang up)
            self._answer(b"408 Request Timeout", b"Request timed out.\r\n")
        # Past the head, the app has the request: closing tells it the client is gone (a 499).
        self.transport.close()


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)  # ": ", CRLF


class _Trailers:
    """Stands in for the request's header list once the head is in: uvicorn appends trailer
    fields to it; they are counted against the cap and dropped. Reading it (an upgrade's
    check) reads the head's headers."""

    def __init__(self, protocol: LimitedHttpToolsProtocol, head: list[tuple[bytes, bytes]]) -> None:
        self.protocol = protocol
        self.head = head
        self.size = 0

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self.head)

    def append(self, field: tuple[bytes, bytes]) -> None:
        self.size += len(field[0]) + len(field[1]) + 4
        if self.size > MAX_HEADER_BYTES:
            self.protocol.transport.abort()  # an answer may be under way: no 431 in its middle
            raise HeadTooLarge


def serve(settings: Settings) -> None:
    """Run uvicorn as production does: uvloop, the header-limited httptools, no proxy headers.

    With WEB_CONCURRENCY > 1, uvicorn spawns workers that each build the app from the
    environment (`web.app:from_env`) and share a metrics folder made for this run.
    """
    many = settings.workers > 1
    app: Starlette | str = "web.app:from_env"  # each worker builds its own (and settles its heap)
    if not many:
        app = create_app(settings)
        settle_heap()
    with multiprocess_dir(settings.workers):
        # proxy_headers off: the client address comes from TRUSTED_PROXIES, in the app, or not at all.
        # Uvicorn handles SIGINT/SIGTERM: in-flight requests finish, the lifespan closes the pools.
        # workers= always: else uvicorn reads WEB_CONCURRENCY itself and refuses an app object.
        uvicorn.run(
            app,
            factory=many,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            proxy_headers=False,
            server_header=False,
            loop="uvloop",
            http=LimitedHttpToolsProtocol,
            timeout_graceful_shutdown=10,
        )


def main() -> int:
    """Production: every service URL must be set; nothing is started or defaulted."""
    try:
        settings = Settings.for_production()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
