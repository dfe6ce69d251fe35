"""Running a listener inside a test: drained until idle, or in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from cascade.handling import Registry
from listener import Listener, ListenerSettings


def quick_settings(url: str, **overrides: Any) -> ListenerSettings:
    """Short intervals, so that tests wait on milliseconds, not seconds."""
    values: dict[str, Any] = {
        "poll_interval": 0.2,
        "heartbeat_interval": 0.2,
        "rescue_interval": 0.2,
        "stats_interval": 60.0,
        "refresh_interval": 0.5,
        "drain_timeout": 2.0,
    }
    values.update(overrides)
    return ListenerSettings(database_url=url, **values)


async def drain(
    url: str, registry: Registry, *, timeout: float = 30.0, **overrides: Any
) -> Listener:
    """Runs a listener until nothing is pending, retrying or in flight."""
    listener = Listener(quick_settings(url, **overrides), registry)
    await asyncio.wait_for(listener.run(until_idle=True), timeout)
    return listener


@contextlib.asynccontextmanager
async def running(url: str, registry: Registry, **overrides: Any) -> AsyncIterator[Listener]:
    """A listener in the background for the block's duration; stopped (and drained) after."""
    listener = Listener(quick_settings(url, **overrides), registry)
    task = asyncio.create_task(listener.run())
    try:
        yield listener
    finally:
        listener.stop()
        await asyncio.wait_for(task, 15)
