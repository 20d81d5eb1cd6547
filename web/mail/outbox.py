"""Mail the app sends: rendered from templates/mail/<name>.txt and .html, queued before the
request answers (the sender delivers it), links built on PUBLIC_URL and never on the Host
header of the request."""

from __future__ import annotations

import hashlib
import hmac
import logging
from email.message import EmailMessage
from typing import Any

from web.mail.message import build_message, is_plain_address
from web.mail.queue import MailQueue
from web.templating import env

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, queue: MailQueue, *, sender: str, public_url: str, keys: tuple[bytes, ...]) -> None:
        self.queue = queue
        self.sender = sender
        self.public_url = public_url.rstrip("/")
        self.keys = keys

    def link(self, path: str) -> str:
        """A full link for a mail: PUBLIC_URL and a path from the route table."""
        return self.public_url + path

    def recipient_tags(self, address: str) -> list[str]:
        """How queued mail names its recipient: a keyed hash, one per secret key (rotation)."""
        return [
            hmac.new(key, f"mail-to:{address.lower()}".encode(), hashlib.sha256).hexdigest()[:32]
            for key in self.keys
        ]

    def render(self, to: str, template: str, **context: Any) -> EmailMessage:
        """The message, not yet queued: the subject is the template's `subject` block."""
        ctx = {"to": to, "public_url": self.public_url, **context}
        text_template = env.get_template(f"mail/{template}.txt")
        subject = "".join(text_template.blocks["subject"](text_template.new_context(ctx))).strip()
        return build_message(
            sender=self.sender,
            to=to,
            subject=subject,
            text=text_template.render(ctx),
            html=env.get_template(f"mail/{template}.html").render(ctx),
        )

    async def send(self, to: str, template: str, **context: Any) -> str:
        """Queue a mail (durably, in Redis); return its queue id ("" if it cannot be sent)."""
        if not is_plain_address(to):
            # Stored before addresses had to be plain: better no mail than one that goes astray,
            # and the account's own flows (deletion included) still work.
            log.warning("not mailing %r: the address is not plain", template)
            return ""
        message = self.render(to, template, **context)
        return await self.queue.enqueue(message, recipient_tag=self.recipient_tags(to)[0])

    async def forget(self, address: str, *, keep: tuple[str, ...] = ()) -> int:
        """Drop queued, unsent mail to an address (but the ids in `keep`)."""
        return sum(
            [await self.queue.delete_for(tag, except_ids=keep) for tag in self.recipient_tags(address)]
        )
