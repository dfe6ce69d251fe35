"""Access to the operations API: bearer tokens with a role, and a request rate limit.

A token is `cas_` and 43 URL-safe characters (`secrets.token_urlsafe(32)`, 256 bits). Only its
SHA-256 is stored (marketing.api_tokens, schema/0008); `create_token` returns the secret once
and nothing can show it again. Roles are ordered viewer < ops < admin: viewers read, ops change
campaigns and replay, admins manage tokens. A route declares the least role it needs by
wrapping its endpoint in `requires(role)`; the wrapper answers, in the error envelope,

- 429 `rate_limited` with Retry-After when the source address or the token is over its limit,
- 401 `unauthorized` with `WWW-Authenticate: Bearer` for a missing, malformed, unknown or
  revoked token (one answer for the last three, so a caller cannot probe which tokens exist),
- 403 `forbidden` for a valid token whose role is too low.

The rate limit is a token bucket per source address and per token, held in this process's
memory: each process of a multi-worker deployment enforces its own, so the effective limit is
the configured one times the number of processes. A wrapped endpoint needs
`app.state.pool` (an asyncpg pool) and `app.state.access` (an `Access`), set in lifespan.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, LiteralString, get_args

import asyncpg
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from cascade.handling import Connection
from cascade.web.fields import positive_setting
from cascade.web.http import envelope

Role = Literal["viewer", "ops", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)  # least to most privileged
TOKEN_PREFIX = "cas_"  # noqa: S105 (the marker every token starts with, not a secret)
PREFIX_LENGTH = 12  # "cas_" and 8 random characters (48 bits): enough to tell tokens apart
_TOKEN = re.compile(TOKEN_PREFIX + r"[A-Za-z0-9_-]{43}")
# last_used_at is written when it is older than this (seconds): one write a minute per token.
LAST_USED_RESOLUTION = 60
REALM = 'Bearer realm="cascade"'
DEFAULT_PER_MINUTE = 120
DEFAULT_BURST = 30
# Buckets kept per limiter; past it the least recently used goes (it starts full again).
MAX_BUCKETS = 10_000

STORE_HASH: LiteralString = """
    INSERT INTO marketing.api_tokens (name, role, token_hash, prefix, created_by)
    VALUES ($1, $2, $3, $4, $5)
 RETURNING id, name, role, prefix, created_at, last_used_at, revoked_at, created_by
"""
LIST_TOKENS: LiteralString = """
    SELECT id, name, role, prefix, created_at, last_used_at, revoked_at, created_by
      FROM marketing.api_tokens ORDER BY id
"""
# Locks the matches so a concurrent revoke of the same token waits and then sees it revoked.
FIND_TO_REVOKE: LiteralString = """
    SELECT id, revoked_at FROM marketing.api_tokens
     WHERE id = $1 OR prefix = $2
       FOR UPDATE
"""
REVOKE: LiteralString = """
    UPDATE marketing.api_tokens SET revoked_at = coalesce(revoked_at, now())
     WHERE id = $1
 RETURNING id, name, role, prefix, created_at, last_used_at, revoked_at, created_by
"""
# One round trip per request: the lookup by hash (the unique index), and last_used_at moved on
# only when it is older than $2 seconds. The staleness test is on the updated row itself, so of
# two concurrent requests the second re-checks after the first commits and writes nothing.
AUTHENTICATE: LiteralString = """
    WITH found AS (
        SELECT id, name, role, token_hash, revoked_at
          FROM marketing.api_tokens WHERE token_hash = $1
    ), touched AS (
        UPDATE marketing.api_tokens AS t SET last_used_at = now()
          FROM found
         WHERE t.id = found.id AND found.revoked_at IS NULL
           AND (t.last_used_at IS NULL OR t.last_used_at < now() - make_interval(secs => $2))
    )
    SELECT id, name, role, token_hash, revoked_at FROM found
"""


# -- tokens ------------------------------------------------------------------------------------


class TokenInfo(BaseModel, frozen=True):
    """A token as listings show it: never its hash, never its secret."""

    id: int
    name: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_by: str


@dataclass(frozen=True)
class IssuedToken:
    secret: str = field(repr=False)  # shown once, to whoever asked for it; never logged
    token: TokenInfo


@dataclass(frozen=True)
class Revocation:
    token: TokenInfo
    already_revoked: bool  # revoked before this call; revoked_at is the first revocation's


class TokenNotFound(LookupError):
    pass


class AmbiguousPrefix(LookupError):
    pass


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_prefix(secret: str) -> str:
    return secret[:PREFIX_LENGTH]


async def create_token(conn: Connection, name: str, role: Role, created_by: str) -> str:
    """Stores a new token's hash and returns its secret: the only time the secret exists."""
    return (await issue_token(conn, name, role, created_by)).secret


async def issue_token(conn: Connection, name: str, role: Role, created_by: str) -> IssuedToken:
    """`create_token`, also returning the stored row (for POST /api/tokens's answer)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if not name.strip():
        raise ValueError("a token needs a name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        STORE_HASH, name, role, hash_token(secret), token_prefix(secret), created_by
    )
    assert row is not None  # an INSERT ... RETURNING returns its row
    return IssuedToken(secret, TokenInfo.model_validate(dict(row)))


async def list_tokens(conn: Connection) -> list[TokenInfo]:
    return [TokenInfo.model_validate(dict(row)) for row in await conn.fetch(LIST_TOKENS)]


async def revoke_token(conn: Connection, which: int | str) -> Revocation:
    """Revokes the token with this id or prefix. Revoking twice keeps the first revoked_at.
    TokenNotFound when nothing matches, AmbiguousPrefix when a prefix matches several."""
    by_id, by_prefix = (which, None) if isinstance(which, int) else (None, which)
    async with conn.transaction():
        matches = await conn.fetch(FIND_TO_REVOKE, by_id, by_prefix)
        if not matches:
            raise TokenNotFound(f"no token with id or prefix {which!r}")
        if len(matches) > 1:
            ids = ", ".join(str(row["id"]) for row in matches)
            raise AmbiguousPrefix(f"prefix {which!r} matches tokens {ids}: revoke by id")
        row = await conn.fetchrow(REVOKE, matches[0]["id"])
    assert row is not None  # locked above, so still there
    return Revocation(TokenInfo.model_validate(dict(row)), matches[0]["revoked_at"] is not None)


# -- rate limit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """Requests a minute (the refill rate) and burst (the bucket's size), per key."""

    per_minute: int = DEFAULT_PER_MINUTE
    burst: int = DEFAULT_BURST

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RateLimit:
        return cls(
            per_minute=positive_setting(
                environ, "CASCADE_RATE_LIMIT_PER_MINUTE", DEFAULT_PER_MINUTE
            ),
            burst=positive_setting(environ, "CASCADE_RATE_LIMIT_BURST", DEFAULT_BURST),
        )


@dataclass
class _Bucket:
    tokens: float
    updated: float  # clock reading when `tokens` was last brought up to date


class TokenBucket:
    """Token buckets by key. `take` spends one token, or says how long until one is there.

    Touched only from the event loop, with no await inside, so it needs no lock."""

    def __init__(
        self, limit: RateLimit, clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_BUCKETS,
    ) -> None:  # fmt: skip
        self.limit = limit
        self.per_second = limit.per_minute / 60
        self.clock = clock
        self.max_keys = max_keys
        self.buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> int:
        """0 when a token was spent; otherwise the whole seconds (at least 1) to wait."""
        now = self.clock()
        bucket = self.buckets.pop(key, None) or _Bucket(float(self.limit.burst), now)
        self.buckets[key] = bucket  # most recently used last
        if len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        elapsed = now - bucket.updated
        bucket.tokens = min(float(self.limit.burst), bucket.tokens + elapsed * self.per_second)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.per_second))


class Access:
    """What `requires` consults: the rate limits of this process, by address and by token."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.by_address = TokenBucket(limit, clock)
        self.by_token = TokenBucket(limit, clock)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Access:
        return cls(RateLimit.from_env(environ))


# -- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who made the request: `request.state.principal` inside a wrapped endpoint."""

    token_id: int
    name: str
    role: Role


Endpoint = Callable[[Request], Awaitable[Response]]
# The least role of every wrapped endpoint, read by the API description (cascade/web/openapi.py)
# from the wrapper itself, so the document cannot name a role other than the one checked.
_REQUIRED_ROLES: weakref.WeakKeyDictionary[Endpoint, Role] = weakref.WeakKeyDictionary()


def requires(role: Role) -> Callable[[Endpoint], Endpoint]:
    """Wraps an endpoint so that only a token of `role` or above reaches it."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            refused = await _admit(request, role)
            return refused if refused is not None else await endpoint(request)

        _REQUIRED_ROLES[guarded] = role
        return guarded

    return wrap


def required_role(endpoint: Endpoint) -> Role | None:
    """The role `requires` wrapped this endpoint with; None for a public endpoint."""
    return _REQUIRED_ROLES.get(endpoint)


def principal(request: Request) -> Principal:
    found: Principal = request.state.principal
    return found


async def _admit(request: Request, role: Role) -> Response | None:
    """None when the request may go on (its Principal then in request.state), else the answer."""
    access = _access(request)
    address = request.client.host if request.client else "unknown"
    # The address limit comes first: it also caps how fast one address can guess tokens.
    if wait := access.by_address.take(address):
        return _rate_limited(wait, "address")
    secret = _bearer(request.headers.get("authorization", ""))
    if secret is None:
        return _unauthorized("a bearer token is required", invalid=False)
    if not _TOKEN.fullmatch(secret):
        return _unauthorized("the bearer token is malformed")
    found = await _authenticate(request.app.state.pool, secret)
    if found is None:
        return _unauthorized("the bearer token is unknown or revoked")
    if wait := access.by_token.take(str(found.token_id)):
        return _rate_limited(wait, "token")
    if ROLES.index(found.role) < ROLES.index(role):
        return _forbidden(found.role, role)
    request.state.principal = found
    return None


def _access(request: Request) -> Access:
    access = getattr(request.app.state, "access", None)
    if not isinstance(access, Access):
        raise RuntimeError("app.state.access is not set: create an Access in the lifespan")
    return access


def _bearer(header: str) -> str | None:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


async def _authenticate(pool: asyncpg.Pool, secret: str) -> Principal | None:
    digest = hash_token(secret)
    row = await pool.fetchrow(AUTHENTICATE, digest, LAST_USED_RESOLUTION)
    # The index lookup compares hashes of the caller's input, whose timing tells nothing about
    # a stored secret; the constant-time comparison makes the match explicit all the same.
    if row is None or not hmac.compare_digest(row["token_hash"], digest):
        return None
    if row["revoked_at"] is not None:
        return None
    return Principal(token_id=row["id"], name=row["name"], role=row["role"])


def _unauthorized(message: str, *, invalid: bool = True) -> Response:
    # RFC 6750 §3: a request with no credentials gets the bare challenge, a bad token an error.
    challenge = f'{REALM}, error="invalid_token"' if invalid else REALM
    return envelope(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def _forbidden(role: Role, required: Role) -> Response:
    message = f"this route needs the {required} role or above; the token's role is {role}"
    challenge = f'{REALM}, error="insufficient_scope"'
    details = {"required_role": required, "role": role}
    return envelope(403, "forbidden", message, details, {"WWW-Authenticate": challenge})


def _rate_limited(wait: int, limit: Literal["address", "token"]) -> Response:
    message = f"too many requests from this {limit}; retry in {wait} s"
    details = {"limit": limit, "retry_after": wait}
    return envelope(429, "rate_limited", message, details, {"Retry-After": str(wait)})
