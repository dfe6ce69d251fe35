"""Token administration over HTTP, for admins: what `cascade token` does, as three routes.

    GET    /api/tokens        every token, revoked ones too; never a hash or a secret    admin
    POST   /api/tokens        {"name", "role"}: 201 with the secret, shown this once      admin
    DELETE /api/tokens/{id}   revoke                                                      admin

Creating, listing and revoking are cascade/web/auth.py's `issue_token`, `list_tokens` and
`revoke_token`, which the CLI calls too: one implementation of each.

The secret is in the 201 answer and nowhere else: only its SHA-256 is stored, no request or
answer body is logged, and the answer says `Cache-Control: no-store` so that no cache keeps it.
A new token works on the next request and a revoked one is refused on its next request (401):
every request looks its token's hash up afresh.

**Revoking is idempotent.** Revoking a revoked token answers 200 again, with
`"already_revoked": true` and the first revocation's `revoked_at`, and changes nothing: the
caller wants the token unusable, and it is. An unknown id is 404 `token_not_found`. An admin may
revoke their own token, the last admin token included: `cascade token create --role admin` on
the host makes another, so no lock-out is permanent.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from pydantic import BaseModel, BeforeValidator, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cascade.web.auth import (
    Role,
    TokenInfo,
    TokenNotFound,
    issue_token,
    list_tokens,
    principal,
    requires,
    revoke_token,
)
from cascade.web.fields import BIGINT_MAX
from cascade.web.http import ApiError, parse, read_json_body

NO_STORE = {"Cache-Control": "no-store"}


def _strip(value: object) -> object:
    # Stripped as issue_token checks it, by str.strip(): pydantic's strip_whitespace keeps the
    # ASCII separators \x1c-\x1f, so a name of those alone passed here and failed there (a 500).
    return value.strip() if isinstance(value, str) else value


TokenName = Annotated[
    str,
    BeforeValidator(_strip),
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
]


class NewToken(BaseModel, frozen=True, extra="forbid"):
    """POST /api/tokens: who or what the token is for, and its role."""

    name: TokenName
    role: Role


class TokenList(BaseModel, frozen=True):
    tokens: list[TokenInfo]


class CreatedToken(BaseModel, frozen=True):
    secret: str  # `cas_` and 43 characters: send it as `Authorization: Bearer <secret>`
    token: TokenInfo
    note: str = "the secret is shown this once: only its hash is stored"


class Revoked(BaseModel, frozen=True):
    token: TokenInfo
    already_revoked: bool  # true: it was revoked before, and revoked_at is that first time


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _json(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status, headers=NO_STORE)


@requires("admin")
async def list_all(request: Request) -> JSONResponse:
    async with _pool(request).acquire() as conn:
        return _json(TokenList(tokens=await list_tokens(conn)))


@requires("admin")
async def create(request: Request) -> JSONResponse:
    new = parse(NewToken, await read_json_body(request))
    who = principal(request)
    async with _pool(request).acquire() as conn:
        issued = await issue_token(
            conn, new.name, new.role, f"api:{who.name} (token {who.token_id})"
        )
    return _json(CreatedToken(secret=issued.secret, token=issued.token), 201)


@requires("admin")
async def revoke(request: Request) -> JSONResponse:
    token_id: int = request.path_params["token_id"]
    try:
        if token_id > BIGINT_MAX:  # no such id can exist, and asyncpg would refuse to send it
            raise TokenNotFound(token_id)
        async with _pool(request).acquire() as conn:
            revocation = await revoke_token(conn, token_id)
    except TokenNotFound:
        raise ApiError(
            404, "token_not_found", f"no token {token_id}", {"token_id": token_id}
        ) from None
    return _json(Revoked(token=revocation.token, already_revoked=revocation.already_revoked))


ROUTES = [
    Route("/api/tokens", list_all, methods=["GET"]),
    Route("/api/tokens", create, methods=["POST"]),
    Route("/api/tokens/{token_id:id}", revoke, methods=["DELETE"]),
]
