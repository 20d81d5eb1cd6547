"""The development mail catcher: an SMTP server that keeps every message in a Maildir.

`python -m web` starts it as a child process when SMTP_URL is not set, just as it starts a
local Redis, and the dev inbox page reads the Maildir back. aiosmtpd (an `embedded` extra) is
imported only by the child, so reading the Maildir needs nothing beyond the standard library.

    python -m web.mail.catcher --host 127.0.0.1 --port 8025 --maildir .data/mail
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import mailbox
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from web.embedded import Server, free_port, spawn
from web.mail.message import from_bytes


def make_maildir(path: Path) -> mailbox.Maildir:
    """Open a Maildir, creating it readable by this user only: it holds live reset links."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode is filtered by the umask, and ignored if it existed
    # mailbox.Maildir makes these only when it makes the folder itself.
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    return mailbox.Maildir(path, create=False)


async def serve(host: str, port: int, maildir: Path) -> None:
    """Accept mail on host:port into the Maildir until SIGTERM or SIGINT."""
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP

    make_maildir(maildir)
    handler = Mailbox(maildir)
    loop = asyncio.get_running_loop()
    # A fixed name: aiosmtpd would otherwise ask the resolver for this host's.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mail-catcher", enable_SMTPUTF8=True), host, port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mail catcher on {host}:{port}, into {maildir}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m web.mail.catcher", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.maildir))


def start_mail_catcher(maildir: Path, *, port: int | None = None, log_path: Path | None = None) -> Server:
    """The catcher as a child process on loopback, tied to this process's life like Redis."""
    port = port or free_port()
    make_maildir(maildir)
    argv = [
        sys.executable,
        "-m",
        "web.mail.catcher",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--maildir",
        str(maildir.resolve()),
    ]
    return spawn("mail catcher", argv, port, f"smtp://127.0.0.1:{port}", log_path)


@dataclass(frozen=True)
class CaughtMail:
    """One message in the catcher's Maildir, as the dev inbox shows it."""

    id: str
    sender: str
    to: str
    subject: str
    date: datetime | None  # the Date header
    received: datetime | None  # when the catcher stored it
    text: str
    html: str


def read_maildir(maildir: Path, *, limit: int | None = None) -> list[CaughtMail]:
    """The messages in a Maildir, newest first."""
    if not maildir.is_dir():
        return []
    box = mailbox.Maildir(maildir, create=False)
    found: list[tuple[float, CaughtMail]] = []
    for key in list(box.iterkeys()):
        # A message may be deleted between listing and reading.
        with contextlib.suppress(KeyError, FileNotFoundError):
            received = box.get_message(key).get_date()
            found.append((received, _caught(key, box.get_bytes(key), received)))
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [mail for _, mail in found[:limit]]


def _caught(key: str, raw: bytes, received: float) -> CaughtMail:
    message = from_bytes(raw)
    date_header = message["Date"]
    parts = {}
    for subtype in ("plain", "html"):
        part = message.get_body((subtype,))
        parts[subtype] = part.get_content() if part is not None else ""
    return CaughtMail(
        id=key,
        sender=str(message["From"] or message["X-MailFrom"] or ""),
        to=str(message["To"] or message["X-RcptTo"] or ""),
        subject=str(message["Subject"] or ""),
        date=getattr(date_header, "datetime", None),
        received=datetime.fromtimestamp(received).astimezone() if received else None,
        text=parts["plain"],
        html=parts["html"],
    )


if __name__ == "__main__":
    main()
