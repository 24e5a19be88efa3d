"""Log set-up for the daemons: one line per event on stderr, as text or JSON.

Under systemd (JOURNAL_STREAM names our stderr) the journal stamps each line
itself, so text lines carry no timestamp of their own and start with the
syslog priority (`<6>`), which journald turns into the entry's level.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

# Libraries that log their internals at debug level (pyroute2: every netlink
# message; asyncio, which pyroute2 runs: its selector): an operator's
# `--log-level debug` is about kcpvpn's decisions, not their traffic.
QUIET_LIBRARIES = ("pyroute2", "asyncio")

# logging level -> syslog priority (sd-daemon(3) prefixes).
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def under_journal(stream: TextIO | None = None) -> bool:
    """True when `stream` (stderr) is connected to the journal: systemd sets
    JOURNAL_STREAM to "device:inode" of the stream it gave the service. A
    child that inherited the variable but writes elsewhere is not."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`: the journal adds time, host and pid."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        # A multi-line message would become several entries: each keeps the level.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class JsonFormatter(logging.Formatter):
    """One JSON object per line for log shippers: time (RFC 3339, UTC, ms),
    level, logger, message, pid; `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(fmt: str, stream: TextIO | None = None) -> logging.Formatter:
    """The formatter for --log-format `fmt` writing to `stream`."""
    if fmt == "json":
        return JsonFormatter()
    if under_journal(stream):
        return JournalFormatter()
    return logging.Formatter(TEXT_FORMAT)


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configures the root logger for a daemon (replacing the handler an
    earlier call added; others, such as a test's, stay)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, stream))
    handler.set_name("kcpvpn")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "kcpvpn"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
