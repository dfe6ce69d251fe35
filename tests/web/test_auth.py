"""Bearer tokens, roles and the rate limit (cascade/web/auth.py) over real HTTP against a real
database: a small app of this test's own, whose demo routes are wrapped in `requires`, served
by uvicorn on 127.0.0.1. Production has no such route; web.py's routes are not touched here."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cascade.web.auth import (
    ROLES,
    Access,
    RateLimit,
    TokenBucket,
    create_token,
    principal,
    requires,
    revoke_token,
)
from cascade.web.http import ApiError, CorrelationId, api_error_response, http_error_response

START_TIMEOUT = 10.0  # seconds for the lifespan (pool) to come up
# Roomy enough that the role tests never meet the rate limit.
NO_LIMIT = {"CASCADE_RATE_LIMIT_PER_MINUTE": "6000", "CASCADE_RATE_LIMIT_BURST": "1000"}
# Three at once, then one a minute: the fourth request within a test is always refused.
TIGHT_LIMIT = {"CASCADE_RATE_LIMIT_PER_MINUTE": "1", "CASCADE_RATE_LIMIT_BURST": "3"}
UNKNOWN_TOKEN = "cas_" + "A" * 43

LAST_USED = "SELECT last_used_at FROM marketing.api_tokens WHERE id = $1"
AGE_LAST_USED = """
    UPDATE marketing.api_tokens SET last_used_at = now() - interval '2 minutes' WHERE id = $1
"""
ID_OF = "SELECT id FROM marketing.api_tokens WHERE prefix = left($1, 12)"
ADD_ROW = """
    INSERT INTO marketing.api_tokens (name, role, token_hash, prefix, created_by)
    VALUES ('check', $1, md5($1) || md5($1), 'cas_check', 'test')
"""


@requires("viewer")
async def read(request: Request) -> JSONResponse:
    who = principal(request)
    return JSONResponse({"route": "read", "role": who.role, "token_id": who.token_id})


@requires("ops")
async def change(request: Request) -> JSONResponse:
    return JSONResponse({"route": "change", "role": principal(request).role})


@requires("admin")
async def manage(request: Request) -> JSONResponse:
    return JSONResponse({"route": "manage", "role": principal(request).role})


def demo_app(database_url: str, environ: Mapping[str, str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.access = Access.from_env(environ)
        app.state.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        try:
            yield
        finally:
            await app.state.pool.close()

    return Starlette(
        routes=[
            Route("/demo/read", read),
            Route("/demo/change", change, methods=["POST"]),
            Route("/demo/manage", manage),
        ],
        lifespan=lifespan,
        middleware=[Middleware(CorrelationId)],
        exception_handlers={ApiError: api_error_response, HTTPException: http_error_response},
    )


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """`app` on 127.0.0.1 in a thread of its own; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
        thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            # uvicorn offers only a flag to wait on; the thread dying means the lifespan failed.
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise AssertionError("the demo app did not start (see its log above)")
                time.sleep(0.01)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=15)


StartDemo = Callable[[Mapping[str, str]], str]


@pytest.fixture
def start_demo(database_url: str) -> Iterator[StartDemo]:
    with contextlib.ExitStack() as stack:
        yield lambda environ: stack.enter_context(serving(demo_app(database_url, environ)))


@pytest.fixture
async def demo(start_demo: StartDemo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=start_demo(NO_LIMIT), timeout=30) as http:
        yield http


@contextlib.asynccontextmanager
async def client_from(base_url: str, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connections leave from `address` (any of 127.0.0.0/8 on Linux)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30) as http:
        yield http


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return dict(body["error"])


# -- tokens and roles --------------------------------------------------------------------------


async def test_requires__no_token_is_401_with_a_bearer_challenge(
    demo: httpx.AsyncClient,
) -> None:
    response = await demo.get("/demo/read")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="cascade"'
    assert error(response)["code"] == "unauthorized"


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {UNKNOWN_TOKEN}", "Bearer not-a-cascade-token", f"Basic {UNKNOWN_TOKEN}", "Bearer"],
    ids=["unknown", "malformed", "another-scheme", "empty"],
)
async def test_requires__a_wrong_token_is_401(demo: httpx.AsyncClient, authorization: str) -> None:
    response = await demo.get("/demo/read", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert error(response)["code"] == "unauthorized"


async def test_requires__a_revoked_token_is_401(
    demo: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    secret = await create_token(db, "leaver", "admin", "test")
    assert (await demo.get("/demo/read", headers=bearer(secret))).status_code == 200

    await revoke_token(db, secret[:12])
    response = await demo.get("/demo/read", headers=bearer(secret))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="cascade", error="invalid_token"'
    assert error(response)["message"] == "the bearer token is unknown or revoked"


async def test_requires__a_viewer_on_an_ops_route_is_403_not_401(
    demo: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    secret = await create_token(db, "dashboard", "viewer", "test")

    refused = await demo.post("/demo/change", headers=bearer(secret))
    unauthenticated = await demo.post("/demo/change")

    assert refused.status_code == 403
    assert error(refused) == {
        "code": "forbidden",
        "message": "this route needs the ops role or above; the token's role is viewer",
        "details": {"required_role": "ops", "role": "viewer"},
    }
    assert error(unauthenticated)["code"] == "unauthorized"
    assert (await demo.get("/demo/read", headers=bearer(secret))).status_code == 200


@pytest.mark.parametrize("role", ["ops", "admin"])
async def test_requires__ops_and_admin_pass_an_ops_route(
    demo: httpx.AsyncClient, db: asyncpg.Connection, role: Any
) -> None:
    secret = await create_token(db, f"an {role}", role, "test")

    response = await demo.post("/demo/change", headers=bearer(secret))

    assert response.status_code == 200
    assert response.json() == {"route": "change", "role": role}


async def test_requires__only_admin_passes_an_admin_route(
    demo: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    ops = await create_token(db, "operator", "ops", "test")
    admin = await create_token(db, "owner", "admin", "test")

    assert (await demo.get("/demo/manage", headers=bearer(ops))).status_code == 403
    assert (await demo.get("/demo/manage", headers=bearer(admin))).status_code == 200


async def test_requires__sets_last_used_at_at_most_once_a_minute(
    demo: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    secret = await create_token(db, "poller", "viewer", "test")
    token_id = await db.fetchval(ID_OF, secret)
    assert await db.fetchval(LAST_USED, token_id) is None

    await demo.get("/demo/read", headers=bearer(secret))
    first = await db.fetchval(LAST_USED, token_id)
    await demo.get("/demo/read", headers=bearer(secret))
    second = await db.fetchval(LAST_USED, token_id)
    await db.execute(AGE_LAST_USED, token_id)
    aged = await db.fetchval(LAST_USED, token_id)
    await demo.get("/demo/read", headers=bearer(secret))
    refreshed = await db.fetchval(LAST_USED, token_id)

    assert first is not None
    assert second == first  # no write for a request within the minute
    assert refreshed > aged


async def test_roles__the_python_order_names_exactly_the_roles_sql_accepts(
    db: asyncpg.Connection,
) -> None:
    assert ROLES == ("viewer", "ops", "admin")
    for role in ROLES:
        await db.execute(ADD_ROW, role)

    with pytest.raises(asyncpg.CheckViolationError, match="api_tokens_role_check"):
        await db.execute(ADD_ROW, "root")


# -- rate limit --------------------------------------------------------------------------------


async def test_rate_limit__one_address_past_the_burst_gets_429_with_retry_after(
    start_demo: StartDemo, db: asyncpg.Connection
) -> None:
    base_url = start_demo(TIGHT_LIMIT)
    tokens = [await create_token(db, f"caller {n}", "viewer", "test") for n in range(5)]

    async with client_from(base_url, "127.0.0.1") as one_address:
        passed = [
            (await one_address.get("/demo/read", headers=bearer(s))).status_code for s in tokens[:3]
        ]
        refused = await one_address.get("/demo/read", headers=bearer(tokens[3]))
    async with client_from(base_url, "127.0.0.2") as another_address:
        elsewhere = await another_address.get("/demo/read", headers=bearer(tokens[4]))

    assert passed == [200, 200, 200]
    assert refused.status_code == 429
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    assert error(refused)["code"] == "rate_limited"
    assert error(refused)["details"] == {"limit": "address", "retry_after": int(retry_after)}
    assert elsewhere.status_code == 200


async def test_rate_limit__the_address_limit_also_counts_requests_without_a_token(
    start_demo: StartDemo,
) -> None:
    base_url = start_demo(TIGHT_LIMIT)

    async with client_from(base_url, "127.0.0.1") as guesser:
        answers = [(await guesser.get("/demo/read")).status_code for _ in range(4)]

    assert answers == [401, 401, 401, 429]


async def test_rate_limit__one_token_past_the_burst_gets_429_from_any_address(
    start_demo: StartDemo, db: asyncpg.Connection
) -> None:
    base_url = start_demo(TIGHT_LIMIT)
    shared = await create_token(db, "shared", "viewer", "test")
    other = await create_token(db, "other", "viewer", "test")

    answers = []
    for n in range(2, 6):  # a fresh address per request: only the token's bucket empties
        async with client_from(base_url, f"127.0.0.{n}") as http:
            answers.append(await http.get("/demo/read", headers=bearer(shared)))
    async with client_from(base_url, "127.0.0.6") as http:
        other_token = await http.get("/demo/read", headers=bearer(other))

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert error(refused)["details"]["limit"] == "token"
    assert other_token.status_code == 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket__spends_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(per_minute=60, burst=2), clock)

    assert [bucket.take("k"), bucket.take("k")] == [0, 0]
    assert bucket.take("k") == 1  # one token a second
    clock.now += 1
    assert bucket.take("k") == 0
    clock.now += 3600
    assert [bucket.take("k") for _ in range(3)] == [0, 0, 1]  # never more than the burst


def test_token_bucket__retry_after_rounds_up_to_whole_seconds() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(per_minute=7, burst=1), clock)

    bucket.take("k")
    first = bucket.take("k")
    clock.now += 8.5
    second = bucket.take("k")

    assert first == 9  # 60/7 = 8.57 s, rounded up
    assert second == 1  # 0.07 s left still says 1, never 0


def test_token_bucket__keys_are_independent_and_the_oldest_is_forgotten_past_the_cap() -> None:
    bucket = TokenBucket(RateLimit(per_minute=1, burst=1), Clock(), max_keys=2)

    assert [bucket.take(key) for key in ("a", "b", "a")] == [0, 0, 60]
    bucket.take("c")  # over the cap: "b", the least recently used, goes

    assert list(bucket.buckets) == ["a", "c"]


def test_rate_limit__reads_the_environment_and_refuses_nonsense() -> None:
    assert RateLimit.from_env({}) == RateLimit(per_minute=120, burst=30)
    assert RateLimit.from_env(TIGHT_LIMIT) == RateLimit(per_minute=1, burst=3)
    for bad in ("0", "-5", "ten", "1.5"):
        with pytest.raises(ValueError, match="CASCADE_RATE_LIMIT_BURST"):
            RateLimit.from_env({"CASCADE_RATE_LIMIT_BURST": bad})


def test_requires__refuses_an_unknown_role_at_import() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        requires("root")  # type: ignore[arg-type]
