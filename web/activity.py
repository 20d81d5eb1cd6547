"""Each account's security activity: what happened to it, for its owner to read.

Audit events that name an account (web/audit.py) become Event documents in MongoDB: one per
event, indexed by account and time, deleted after 90 days by a TTL index. They are written
by a background task in batches, off the request's path, like the audit log; never a
password, a token or a session id in them. A failed sign-in for an address with no account
names no account, so it is never stored here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from beanie import Document
from bson import ObjectId
from bson.errors import InvalidId
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from web.auth.users import User
from web.sessions.agent import browser_label

log = logging.getLogger(__name__)
KEEP = timedelta(days=90)
QUEUE_MAX = 10_000  # events waiting for MongoDB; past that they are dropped, with a log line
BATCH = 100

# Who ended a session, as the page says it.
ENDED_BY = {
    "revoked": "you, from the sessions page",
    "revoked_others": "you, signing out everywhere else",
    "password_changed": "a password change",
    "password_reset": "a password reset",
    "reported": "a “this wasn't me” report",
    "factor_removed": "a sign-in factor taken away",
    "deleted": "the account's deletion",
}
FACTORS = {
    "login_success": "password",
    "login_success_totp": "password and authenticator app",
    "login_success_recovery": "password and recovery code",
    "login_success_passkey": "passkey",
}


class Event(Document):
    user_id: str
    type: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    ip: str | None = None
    browser: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    class Settings:
        name = "events"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("user_id", ASCENDING), ("_id", DESCENDING)]),
            IndexModel([("at", ASCENDING)], expireAfterSeconds=int(KEEP.total_seconds())),
        ]


def events_of(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The activity (type, detail) an audit event stands for; most stand for none."""
    event = record["event"]
    if event in FACTORS:
        return [("sign_in", {"with": FACTORS[event]})]
    if event == "signup":
        return [("sign_up", {})]
    if event == "passkey_failure":  # one of the account's own passkeys, refused (a clone, say)
        return [("sign_in_failed", {"wrong": "passkey"})] if record.get("user_id") else []
    if event in ("login_failure", "second_factor_failure"):
        failed = ("sign_in_failed", {"wrong": "code" if event == "second_factor_failure" else "password"})
        locked = record.get("locked_for")
        return [failed, ("locked", {"seconds": locked})] if locked else [failed]
    if event == "session_revoked" and record.get("reason") == "deleted":
        return []  # the history goes with the account
    if event == "session_revoked":
        return [("session_ended", {"by": ENDED_BY.get(record.get("reason", ""), "you")})]
    if event == "logout":
        return [("session_ended", {"by": "you, signing out"})]
    simple = {
        "password_changed": "password_changed",
        "password_reset": "password_reset",
        "password_reset_requested": "reset_requested",
        "email_change_requested": "email_change_requested",
        "email_changed": "email_changed",
        "email_verified": "email_verified",
        "recovery_code_used": "recovery_code_used",
        "new_browser_notice_sent": "new_browser",
        "session_reported": "session_reported",
    }
    if event in simple:
        return [(simple[event], {})]
    if event == "factor_changed":
        return [("factor_changed", {"change": record.get("change", "")})]
    return []


class ActivityLog:
    """The background writer: audit events in, Event documents out, in batches."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def __call__(self, record: dict[str, Any]) -> None:
        """An audit listener: cheap, never blocks, never fails the request."""
        for kind, detail in events_of(record):
            agent = record.get("user_agent") or ""
            event = Event(
                user_id=record["user_id"],
                type=kind,
                ip=record.get("ip"),
                browser=browser_label(agent) if agent else None,
                detail=detail,
            )
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("activity queue full: an event of %s was dropped", record["user_id"])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="activity log")

    async def stop(self) -> None:
        """Write what is queued (within a few seconds), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self) -> None:
        """Wait until every event queued so far is in MongoDB (for tests and for deletion)."""
        await self.queue.join()

    async def _run(self) -> None:
        pause = 0.1
        while True:
            batch = [await self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            while True:
                try:
                    await Event.get_pymongo_collection().insert_many(
                        [e.model_dump(exclude={"id"}) for e in batch]
                    )
                    pause = 0.1
                    break
                except Exception as exc:  # MongoDB away: keep the batch, try again, slower each time
                    log.warning("activity: %d events wait for MongoDB: %r", len(batch), exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 30.0)
            await self._drop_orphans(batch)
            for _ in batch:
                self.queue.task_done()

    async def _drop_orphans(self, batch: list[Event]) -> None:
        """Delete what was just written for accounts that are gone: a request under way when
        its account was deleted may log after the deletion's own purge, in any worker. (The
        deletion purges after removing the account, and this check runs after writing: one of
        the two sees the other's work.)"""
        ids = {event.user_id for event in batch}
        try:
            found = User.get_pymongo_collection().find(
                {"_id": {"$in": [ObjectId(i) for i in ids]}}, {"_id": 1}
            )
            gone = ids - {str(doc["_id"]) async for doc in found}
            if gone:
                await Event.get_pymongo_collection().delete_many({"user_id": {"$in": sorted(gone)}})
        except Exception as exc:  # MongoDB away: these events stay until their TTL
            log.warning("activity: could not check %d accounts for deletion: %r", len(ids), exc)


async def page(user_id: str, before: str | None, size: int = 20) -> tuple[list[Event], str | None]:
    """Events of one account, newest first, `size` at a time; the cursor for the next page.

    The cursor is the id of the last event shown (ids grow with time): a page stays the same
    while new events arrive above it.
    """
    query: dict[str, Any] = {"user_id": user_id}
    if before:
        try:
            query["_id"] = {"$lt": ObjectId(before)}
        except (InvalidId, TypeError):
            return [], None
    found = await Event.find(query).sort("-_id").limit(size + 1).to_list()
    more = len(found) > size
    shown = found[:size]
    return shown, (str(shown[-1].id) if more and shown else None)


async def forget(user_id: str) -> None:
    """Delete an account's whole history (the account is being deleted)."""
    await Event.get_pymongo_collection().delete_many({"user_id": user_id})
