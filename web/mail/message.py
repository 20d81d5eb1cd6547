"""Building outgoing mail, and turning it into bytes and back for the queue."""

from __future__ import annotations

import email.policy
import email.utils
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser

# A plain address: a dot-atom local part of printable ASCII and a domain of letters, digits and
# hyphens. No quoting, comments, groups, routes, lists or encoded words: in a mail header, any of
# those can name another recipient than the address stored (see build_message).
# ASCII letters, digits and hyphens only: "bücher.de", example.com in fullwidth letters or
# Arabic-Indic digits would be one more account for a mailbox that has one under its IDNA name.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]+@{_LABEL}(?:\.{_LABEL})+")


def is_plain_address(email: str) -> bool:
    """An address that a mail header carries as exactly itself, to exactly one recipient."""
    if not _EMAIL.fullmatch(email) or "=?" in email or ".." in email or email.startswith("."):
        return False
    try:
        return Address(addr_spec=email).addr_spec == email
    except Exception:  # the email package raises ValueError, AttributeError, IndexError... for bad ones
        return False


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative mail, plain text first, HTML second, all UTF-8.

    `to` is an address alone (is_plain_address), with no display name: it becomes the
    header as an Address, so nothing in it is read as a comment, a list or an encoded word.
    """
    message = EmailMessage()
    message["From"] = sender
    # As an Address, never as header text: text would be parsed, and could name other recipients.
    message["To"] = Address(addr_spec=to)
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(date or datetime.now(UTC))
    # The sender's own domain: make_msgid() would otherwise ask the resolver for this host's name.
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    # RFC 3834: tells vacation responders and other robots not to answer.
    message["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        del message[name]
        message[name] = value
    message.set_content(text, charset="utf-8", cte=_transfer_encoding(text))
    message.add_alternative(html, subtype="html", charset="utf-8", cte=_transfer_encoding(html))
    return message


def _transfer_encoding(body: str) -> str | None:
    """7bit for ASCII within SMTP's line limit; else None, for the email package's choice."""
    # Left to itself, the email package quoted-printable-encodes any line over 78 characters,
    # which cuts a long link in the raw message with "=" soft breaks.
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return None


def to_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=email.policy.default)


def from_bytes(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)  # policy.default makes EmailMessage
    return parsed
