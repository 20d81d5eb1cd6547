"""The audit log: one JSON line per security event, written off the request's path.

The same events, where they concern an account, also reach that account's own security
activity (web/activity.py): the request's app says where, through a context variable.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from starlette.types import Scope

logger = logging.getLogger("web.audit")
Listener = Callable[[dict[str, Any]], None]
# Set for each request by the outer middleware: where this app's account events go, and the
# request (its User-Agent: the activity page names the browser). One set per request, no parsing.
context: ContextVar[tuple[Listener, Scope] | None] = ContextVar("audit_context", default=None)


def audit(
    event: str,
    *,
    ip: str | None,
    user_id: str | None = None,
    session: str | None = None,
    level: int = logging.INFO,
    **extra: Any,
) -> None:
    """Record a security event. `session` is a keyed hash of the session, never the id itself."""
    record = {
        "event": event,
        "level": logging.getLevelName(level).lower(),
        "user_id": user_id,
        "ip": ip,
        "session": session,
        **extra,
    }
    if logger.isEnabledFor(level):
        logger.log(level, "%s", event, extra={"audit": record})
    bound = context.get()
    if bound is not None and user_id is not None:
        sink, scope = bound
        agent = next((v for k, v in scope.get("headers", ()) if k == b"user-agent"), b"")
        sink({**record, "user_agent": agent.decode("latin-1")})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "audit", None) or {"event": record.getMessage()}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return json.dumps({"time": f"{stamp}.{int(record.msecs):03d}Z", **fields}, separators=(",", ":"))


class _Enqueue(QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The default formats here, on the request's thread; the listener's thread does it instead.
        return record


def start_audit_log(level: int) -> QueueListener:
    """Send audit lines to stderr through a queue, so a request only pays for a put()."""
    logger.setLevel(level)
    logger.propagate = False
    output = logging.StreamHandler(sys.stderr)
    output.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    for handler in list(logger.handlers):
        if isinstance(handler, _Enqueue):
            logger.removeHandler(handler)
    logger.addHandler(_Enqueue(q))
    listener = QueueListener(q, output)
    listener.start()
    return listener
