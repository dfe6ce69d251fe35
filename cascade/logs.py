"""Structured JSON logs: one object per line, with the event's fields as keys.

The engine passes `extra={"event_id": ..., "run_id": ..., "event_type": ..., "attempt": ...,
"duration_ms": ...}`; the formatter adds time, level, logger and message.
"""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter


def configure(level: str | None = None) -> None:
    """JSON lines on stderr at CASCADE_LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_drop_color_message)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("CASCADE_LOG_LEVEL", "INFO")).upper())
    # pgserver narrates every pg_ctl call at INFO; its warnings are what an operator needs.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # httpx logs every request at INFO with its full URL, and some providers take their API
    # key as a query parameter (MillionVerifier): never write those lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _drop_color_message(record: logging.LogRecord) -> bool:
    # uvicorn attaches a terminal-coloured copy of each message; JSON has no use for it.
    record.__dict__.pop("color_message", None)
    return True
