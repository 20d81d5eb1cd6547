"""The device cookie: a long-lived, signed note of which accounts have signed in on a browser.

It tells a known browser from a new one, without any server state: sign-in throttling keeps
the owner's known browser out of an attacker's lockout, and a sign-in from a browser that
does not know the account is a "new browser" (a notice is mailed). It holds a random device
id and, per account, a keyed hash bound to that id, so it names no account and cannot be
edited or merged from two cookies.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from starlette.requests import HTTPConnection, cookie_parser

from web.sessions.ids import Signer

MAX_AGE = 400 * 86400  # the longest a browser keeps a cookie (Chrome's cap)
MAX_ACCOUNTS = 10  # the most recent ones; an older account is then "new" again
_FORMAT = re.compile(r"([A-Za-z0-9_-]{43})\.((?:[A-Za-z0-9_-]{16},?){0,10})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Device:
    id: str
    accounts: tuple[str, ...]


class Devices:
    def __init__(self, signer: Signer, *, secure: bool) -> None:
        self.signer = signer
        self.name = "__Host-did" if secure else "did"
        self.attributes = f"Path=/; Max-Age={MAX_AGE}; HttpOnly; SameSite=Lax" + (
            "; Secure" if secure else ""
        )

    def _account(self, device_id: str, user_id: str, key: bytes | None = None) -> str:
        return self.signer.mac("device-account", f"{device_id}:{user_id}", key)[:16]

    def read(self, conn: HTTPConnection) -> Device | None:
        """The browser's genuine device cookie, or None."""
        raw = cookie_parser(conn.headers.get("cookie", "")).get(self.name, "")
        match = _FORMAT.fullmatch(raw)
        if not match:
            return None
        device_id, accounts, mac = match.groups()
        body = f"{device_id}.{accounts}"
        if not any(
            hmac.compare_digest(mac, self.signer.mac("device", body, key)) for key in self.signer.keys
        ):
            return None
        return Device(device_id, tuple(a for a in accounts.split(",") if a))

    def knows(self, device: Device | None, user_id: str) -> bool:
        """Whether this account signed in on this browser before (under any current secret key)."""
        if device is None:
            return False
        mine = {self._account(device.id, user_id, key) for key in self.signer.keys}
        return any(a in mine for a in device.accounts)

    def throttle_id(self, device: Device) -> str:
        """What the throttle counts this browser by: keyed, so Redis holds no cookie material."""
        return self.signer.mac("device-throttle", device.id)[:22]

    def remember(self, device: Device | None, user_id: str) -> str:
        """The Set-Cookie value that adds this account to the browser's cookie (making one if needed)."""
        device_id = device.id if device else secrets.token_urlsafe(32)
        mine = self._account(device_id, user_id)
        accounts = [mine, *(a for a in (device.accounts if device else ()) if a != mine)][:MAX_ACCOUNTS]
        body = f"{device_id}.{','.join(accounts)}"
        return f"{self.name}={body}.{self.signer.mac('device', body)}; {self.attributes}"
