"""Outgoing mail: queued sealed in Redis when a request asks, sent by a background sender.

    queue = MailQueue(redis, SecretBox(secret_keys, "mail-queue"))
    await queue.enqueue(build_message(...), recipient_tag=tag)   # in the request: Redis only
    sender = MailSender(queue, parse_smtp_url(smtp_url))          # in the lifespan
    sender.start() ... await sender.stop()

The development catcher (an SMTP server writing a Maildir) is in web.mail.catcher.
"""

from __future__ import annotations

from web.mail.message import build_message
from web.mail.queue import MailQueue, QueuedMail
from web.mail.sender import MailSender
from web.mail.smtp import DeliveryError, PermanentFailure, SmtpConfig, TransientFailure, parse_smtp_url, send

__all__ = [
    "DeliveryError",
    "MailQueue",
    "MailSender",
    "PermanentFailure",
    "QueuedMail",
    "SmtpConfig",
    "TransientFailure",
    "build_message",
    "parse_smtp_url",
    "send",
]
