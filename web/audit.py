"""The audit log: one JSON line per security event, written off the request's path."""

from __future__ import annotations

import json
import logging
import queue
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from typing import Any

logger = logging.getLogger("web.audit")


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
    if logger.isEnabledFor(level):
        record = {
            "event": event,
            "level": logging.getLevelName(level).lower(),
            "user_id": user_id,
            "ip": ip,
            "session": session,
            **extra,
        }
        logger.log(level, "%s", event, extra={"audit": record})


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
