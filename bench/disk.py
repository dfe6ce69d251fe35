"""The database disk's flush stalls during a latency run (bench/webhooks.py's open loop).

With durable commits a request is answered only after its commit's WAL reached the disk, so
a flush that stalls for 200 ms delays every request in flight for 200 ms, whatever the app
does. A shared virtual disk does that now and then (here: a few flushes a minute over 50
ms, the longest ~300 ms, on an idle machine). A run's p99 then says as much about the disk
as about the app. The probe tells the two apart: a thread writes 8 KiB and fdatasyncs it
every INTERVAL, in a file beside the database's data directory (same filesystem, as a rule),
and keeps every flush that took STALL or longer. The report gives the stalls, and the
latency of the requests that were not in flight during one.

It adds 50 small flushes a second to the disk's load: a fraction of what the commits of a
few thousand requests a second do. The server must be local and its data directory's
parent writable by this process; otherwise there is no probe and the report says so.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

DATA_DIRECTORY = "SHOW data_directory"
INTERVAL = 0.02  # seconds between flushes
STALL = 0.02  # seconds: a flush this slow counts (the latency target's own bound)
BLOCK = b"\0" * 8192
BLOCKS = 256  # the probe file's size, in blocks (2 MiB), written round


@dataclass(frozen=True)
class Stall:
    began: float  # time.monotonic(), the clock asyncio's loop.time() reads
    seconds: float


@dataclass
class DiskProbe:
    """Flushes beside `directory` while the block runs (nothing when it is None)."""

    directory: Path | None
    stalls: list[Stall] = field(default_factory=list)
    flushes: int = 0
    failure: str | None = None  # why the probe stopped early, if it did
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.directory is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:  # fmt: skip
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self._flush_until_stopped()
        except OSError as exc:  # a full disk, say: the report must not read "no stalls"
            self.failure = f"{type(exc).__name__}: {exc}"

    def _flush_until_stopped(self) -> None:
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix="cascade-disk-probe-") as f:
            descriptor = f.fileno()
            while not self._stop.wait(INTERVAL):
                os.pwrite(descriptor, BLOCK, (self.flushes % BLOCKS) * len(BLOCK))
                began = time.monotonic()
                os.fdatasync(descriptor)
                took = time.monotonic() - began
                self.flushes += 1
                if took >= STALL:
                    self.stalls.append(Stall(began, took))

    def summary(self, requests: list[tuple[float, float]]) -> dict[str, object]:
        """The stalls during the requests (each due, done in time.monotonic()), and the
        latency of those not in flight during one."""
        if self.directory is None:
            return {"probed": False}
        if self.failure is not None:
            return {"probed": False, "failure": self.failure}
        if not requests:
            return {"probed": True, "flushes": self.flushes, "stalls_ms": []}
        first, last = min(due for due, _ in requests), max(done for _, done in requests)
        during = [s for s in self.stalls if s.began < last and s.began + s.seconds > first]
        clear = sorted(
            done - due
            for due, done in requests
            if not any(s.began < done and s.began + s.seconds > due for s in during)
        )
        return {
            "probed": True,
            "flushes": self.flushes,
            "stalls_ms": [round(s.seconds * 1000, 1) for s in during],
            "requests_caught": 1 - len(clear) / len(requests),
            "p99_of_others_ms": _nearest_rank(clear, 0.99) * 1000 if clear else None,
        }


def probe_directory(url: str) -> Path | None:
    """Beside the data directory of `url`'s server, if this process can write there."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(DATA_DIRECTORY).fetchone()
    except psycopg.Error:
        return None  # not allowed to read the setting: no probe
    if row is None:
        return None
    parent = Path(str(row[0])).parent
    return parent if parent.is_dir() and os.access(parent, os.W_OK) else None


def _nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
