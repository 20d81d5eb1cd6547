"""SMTP delivery: SMTP_URL parsing, one message per connection, failures sorted into retry or drop."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import logging
import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
QUIT_TIMEOUT = 1.0
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to hand mail over; `timeout` bounds one whole delivery, connect to QUIT."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    require_starttls: bool = False
    timeout: float = DEFAULT_TIMEOUT

    def __str__(self) -> str:
        # For log lines: never the password.
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"


def parse_smtp_url(raw: str) -> SmtpConfig:
    """SMTP_URL: smtp://[user:pass@]host[:port][?starttls=1], or smtps:// for implicit TLS."""
    # Messages never quote the URL: it may hold a password.
    parts = urlsplit(raw.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError("expected smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("missing host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("unexpected path after the host: only ?starttls=1 may follow")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and password is None:
        raise ValueError("a user name needs a password (smtp://user:password@host)")
    if password is not None and not username:
        raise ValueError("a password needs a user name (smtp://user:password@host)")
    implicit_tls = scheme == "smtps"
    require_starttls = False
    timeout = DEFAULT_TIMEOUT
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "starttls" and value.lower() in _TRUE | _FALSE:
            require_starttls = value.lower() in _TRUE
        elif name == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout <= 300:
                raise ValueError("timeout must be a number of seconds, above 0 and at most 300")
        elif name == "starttls":
            raise ValueError("starttls must be 1 or 0")
        else:
            raise ValueError(f"unknown option {name!r} (known: starttls, timeout)")
    if implicit_tls and require_starttls:
        raise ValueError("starttls=1 is for smtp://; smtps:// is TLS from the first byte")
    return SmtpConfig(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 25),
        username=username,
        password=password,
        implicit_tls=implicit_tls,
        require_starttls=require_starttls,
        timeout=timeout,
    )


class DeliveryError(Exception):
    """A message was not delivered; `permanent` says whether trying again could help."""

    permanent = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentFailure(DeliveryError):
    """The server refused this message for good (5xx for its sender, recipients or content)."""

    permanent = True


class TransientFailure(DeliveryError):
    """The server could not be reached or asked us to come back later: retry."""


def _reply(code: int, message: str) -> str:
    # Server replies can be long and may echo the address: the code and a short excerpt do.
    return f"{code} {' '.join(message.split())[:100]}"


# Refusals of this message in particular: a 5xx here is final for it.
_REFUSALS: tuple[tuple[type[aiosmtplib.SMTPResponseException], str], ...] = (
    (aiosmtplib.SMTPSenderRefused, "sender refused"),
    (aiosmtplib.SMTPRecipientRefused, "recipient refused"),
    (aiosmtplib.SMTPDataError, "message refused"),
)


def classify(exc: BaseException) -> DeliveryError:
    """Sort an aiosmtplib (or socket) failure into drop-the-message or try-again."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        reason = "recipients refused: " + ", ".join(_reply(r.code, r.message) for r in exc.recipients)
        return PermanentFailure(reason) if all(c >= 500 for c in codes) else TransientFailure(reason)
    # Refusals of the session as a whole (bad credentials, a banner or EHLO refused) mean the
    # configuration or the server is wrong, not this message: keep it for when that is fixed.
    if isinstance(
        exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPHeloError | aiosmtplib.SMTPConnectError
    ):
        return TransientFailure(f"{type(exc).__name__}: {exc}")
    for kind, what in _REFUSALS:
        if isinstance(exc, kind):
            reason = f"{what}: {_reply(exc.code, exc.message)}"
            return PermanentFailure(reason) if exc.code >= 500 else TransientFailure(reason)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return TransientFailure(_reply(exc.code, exc.message))
    if isinstance(exc, TimeoutError):
        return TransientFailure("timed out")
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        return TransientFailure(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ValueError):
        # aiosmtplib's own check of the message: no recipients, or an address it cannot send.
        return PermanentFailure(f"unsendable message: {exc}")
    return TransientFailure(f"{type(exc).__name__}: {exc}")


_fqdn: list[str] = []  # this process's host name, once known


async def local_hostname() -> str:
    """This host's name for EHLO, looked up once (aiosmtplib would ask the resolver per message)."""
    if not _fqdn:
        _fqdn.append(await asyncio.to_thread(socket.getfqdn))
    return _fqdn[0]


async def send(config: SmtpConfig, message: email.message.EmailMessage) -> None:
    """Deliver one message; raise PermanentFailure or TransientFailure if it did not go."""
    # STARTTLS: required when asked, never inside smtps://, otherwise used when offered.
    start_tls = True if config.require_starttls else (False if config.implicit_tls else None)
    client = aiosmtplib.SMTP(
        hostname=config.host,
        port=config.port,
        username=config.username,
        password=config.password,
        local_hostname=await local_hostname(),
        use_tls=config.implicit_tls,
        start_tls=start_tls,
        timeout=config.timeout,
    )
    # Not `async with client`: on the way out of an error, or a cancellation, it waits for
    # the server to answer QUIT, which holds up a sender being stopped for a whole timeout.
    try:
        try:
            async with asyncio.timeout(config.timeout):
                await client.connect()
                refused, _ = await client.send_message(message)
        except Exception as exc:
            raise classify(exc) from exc
        # Delivered: a QUIT that fails or lingers changes nothing, and must not cause a resend.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(QUIT_TIMEOUT):
                await client.quit()
    finally:
        client.close()
    if refused:
        # Accepted for some recipients: sending again would duplicate it for those.
        log.warning(
            "mail accepted, but %d of its recipients refused: %s",
            len(refused),
            ", ".join(_reply(r.code, r.message) for r in refused.values()),
        )
