"""The web app: health and readiness for now; webhooks and monitoring arrive with issue 4.

Run it as `uvicorn web:app` or `cascade web`. The pool opens in `lifespan`; routes are listed
at the bottom.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import LiteralString

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cascade.database import configured_url

# A listener counts as alive while its heartbeat is younger than this many seconds.
LISTENER_FRESH_SECONDS = 30

LIVE_LISTENERS: LiteralString = """
    SELECT count(*) FROM marketing.listeners
     WHERE heartbeat_at > now() - make_interval(secs => $1)
"""


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": {}}}, status)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    pool: asyncpg.Pool = request.app.state.pool
    try:
        listeners = await pool.fetchval(LIVE_LISTENERS, LISTENER_FRESH_SECONDS)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _error(503, "database_unreachable", f"database check failed: {exc}")
    if not listeners:
        return _error(503, "no_listener", "no listener has sent a heartbeat in the last 30 s")
    return JSONResponse({"status": "ready", "database": "ok", "listeners": listeners})


def create_app(database_url: str | None = None) -> Starlette:
    url = database_url or configured_url()
    if url is None:
        raise RuntimeError(
            "DATABASE_URL is not set (`cascade web` and `cascade up` set it for you)"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
        try:
            yield
        finally:
            await app.state.pool.close()

    routes = [
        Route("/health", health),
        Route("/api/health", health),
        Route("/ready", ready),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def __getattr__(name: str) -> Starlette:
    # `uvicorn web:app` with DATABASE_URL set: build the app on first access, not at import.
    if name == "app":
        return create_app(os.environ.get("DATABASE_URL") or os.environ.get("NEON_DATABASE_URL"))
    raise AttributeError(name)
