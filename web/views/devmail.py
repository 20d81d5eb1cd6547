"""The development inbox: every mail the embedded catcher received (`python -m web` with no
SMTP_URL). Absent (404) whenever a real SMTP server is configured."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from markupsafe import Markup, escape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from web.mail.catcher import read_maildir
from web.security import client_ip, in_networks
from web.services import services
from web.settings import LOOPBACK
from web.templating import render

_LINK = re.compile(r"https?://[^\s<>\"']*[^\s<>\"'.,;:!?)]")  # a full stop ends a sentence, not a link


LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _inbox(request: Request) -> Path:
    settings = services(request).settings
    # Only on this machine: the inbox holds every reset link the app has mailed. And only under
    # this machine's own names: a page elsewhere can point its name at 127.0.0.1 (DNS
    # rebinding) and read what it fetches, but its requests carry its name as the Host.
    host = request.url.hostname
    named = host in LOCAL_NAMES or host == urlsplit(settings.public_url).hostname
    if settings.dev_inbox is None or not named or not in_networks(client_ip(request), LOOPBACK):
        raise HTTPException(404)
    return settings.dev_inbox


def linked(text: str) -> Markup:
    """The plain-text body, escaped, with its links clickable."""
    out, last = [], 0
    for match in _LINK.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(Markup('<a href="{0}">{0}</a>').format(match.group(0)))  # format() escapes
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


async def inbox(request: Request) -> Response:
    return render(request, "pages/devmail.html", {"mails": read_maildir(_inbox(request), limit=200)})


async def message(request: Request) -> Response:
    wanted = request.path_params["id"]
    found = next((m for m in read_maildir(_inbox(request)) if m.id == wanted), None)
    if found is None:
        raise HTTPException(404)
    return render(request, "pages/devmail_message.html", {"mail": found, "body": linked(found.text)})
