"""The web app over real HTTP: uvicorn on 127.0.0.1 in a thread of its own, on this test's
fresh database, with an environment the test chooses (no ambient WEBHOOK_SECRET_*)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import httpx
import pytest
import uvicorn

from web import create_app

START_TIMEOUT = 10.0  # seconds for the lifespan (pool) to come up

StartServer = Callable[[Mapping[str, str]], str]


@contextlib.contextmanager
def running_server(database_url: str, environ: Mapping[str, str]) -> Iterator[str]:
    """Serves `create_app(database_url, environ)`; yields its base URL. The socket is bound
    before uvicorn starts, so the port is known and no request can race the start."""
    config = uvicorn.Config(
        create_app(database_url, environ), log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
        thread.start()
        try:
            _wait_started(server, thread)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=15)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    # uvicorn offers only a flag to wait on; the thread dying means the lifespan failed.
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the web app did not start (see its log above)")
        time.sleep(0.01)


@pytest.fixture
def start_server(database_url: str) -> Iterator[StartServer]:
    """Starts a server with the given environment; stops every one when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda environ: stack.enter_context(running_server(database_url, environ))


@pytest.fixture
def server(start_server: StartServer) -> str:
    """A server with no webhook secrets: deliveries are accepted unverified."""
    return start_server({})


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        yield http
