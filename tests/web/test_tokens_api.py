"""The admin token routes (cascade/web/tokens.py) over real HTTP against a real database: who
may use them, a created token working at once, a revoked one refused at once, revoking twice,
and the secret never listed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from cascade.web.auth import create_token, hash_token, list_tokens
from tests.web.conftest import StartServer

NO_LIMIT = {"CASCADE_RATE_LIMIT_PER_MINUTE": "6000", "CASCADE_RATE_LIMIT_BURST": "1000"}
HASHES = "SELECT token_hash FROM marketing.api_tokens"
STORED = "SELECT name, role, token_hash, created_by FROM marketing.api_tokens WHERE id = $1"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass(frozen=True)
class Api:
    http: httpx.AsyncClient
    admin: dict[str, str]
    ops: dict[str, str]
    viewer: dict[str, str]

    async def create(self, name: str = "deploy bot", role: str = "ops") -> dict[str, Any]:
        response = await self.http.post(
            "/api/tokens", json={"name": name, "role": role}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def api(start_server: StartServer, db: asyncpg.Connection) -> AsyncIterator[Api]:
    # One token per role, each named after its role.
    secrets = [await create_token(db, role, role, "test") for role in ("admin", "ops", "viewer")]
    async with httpx.AsyncClient(base_url=start_server(NO_LIMIT), timeout=30) as http:
        yield Api(http, *map(bearer, secrets))


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


ROUTES = [
    ("GET", "/api/tokens", None),
    ("POST", "/api/tokens", {"name": "x", "role": "viewer"}),
    ("DELETE", "/api/tokens/1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=["list", "create", "revoke"])
async def test_token_routes__ops_and_viewer_are_403(
    api: Api, db: asyncpg.Connection, method: str, path: str, body: dict[str, str] | None
) -> None:
    for headers in (api.ops, api.viewer):
        response = await api.http.request(method, path, json=body, headers=headers)

        assert response.status_code == 403, response.text
        assert error_code(response) == "forbidden"
    assert len(await list_tokens(db)) == 3  # nothing made, nothing revoked
    assert all(token.revoked_at is None for token in await list_tokens(db))


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=["list", "create", "revoke"])
async def test_token_routes__no_token_is_401(
    api: Api, method: str, path: str, body: dict[str, str] | None
) -> None:
    response = await api.http.request(method, path, json=body)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="cascade"'
    assert error_code(response) == "unauthorized"


async def test_create__answers_the_secret_once_and_stores_only_its_hash(
    api: Api, db: asyncpg.Connection
) -> None:
    created = await api.create("deploy bot", "ops")

    secret = created["secret"]
    assert secret.startswith("cas_")
    assert len(secret) == 47
    assert created["token"]["prefix"] == secret[:12]
    admin_id = next(token.id for token in await list_tokens(db) if token.name == "admin")
    assert created["token"] | {"id": None, "created_at": None} == {
        "id": None, "name": "deploy bot", "role": "ops", "prefix": secret[:12],
        "created_at": None, "last_used_at": None, "revoked_at": None,
        "created_by": f"api:admin (token {admin_id})",
    }  # fmt: skip
    row = await db.fetchrow(STORED, created["token"]["id"])
    assert row is not None
    assert row["token_hash"] == hash_token(secret)
    assert secret not in (row["name"], row["token_hash"], row["created_by"])


async def test_create__the_new_token_works_at_once_with_its_role(api: Api) -> None:
    created = await api.create("reader", "viewer")

    read = await api.http.get("/api/campaigns", headers=bearer(created["secret"]))
    change = await api.http.post(
        "/api/campaigns", json={"campaign_name": "x"}, headers=bearer(created["secret"])
    )

    assert read.status_code == 200
    assert change.status_code == 403


async def test_create__an_admin_token_can_manage_tokens(api: Api) -> None:
    created = await api.create("second admin", "admin")

    response = await api.http.get("/api/tokens", headers=bearer(created["secret"]))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "   ", "role": "ops"}, "name"),
        ({"role": "ops"}, "name"),
        ({"name": "x", "role": "ops", "expires": "never"}, "expires"),
        ({"name": "a\u0000b", "role": "ops"}, "name"),
        # Python's str.strip() (which issue_token checks) also strips the ASCII separators
        # \x1c-\x1f, which pydantic's strip_whitespace keeps: blank to one, not to the other.
        ({"name": "\x1f\x1c", "role": "ops"}, "name"),
    ],
    ids=["unknown-role", "blank-name", "no-name", "unknown-field", "nul-in-name", "separators"],
)
async def test_create__refuses_a_bad_body_naming_the_field(
    api: Api, db: asyncpg.Connection, body: dict[str, str], field: str
) -> None:
    response = await api.http.post("/api/tokens", json=body, headers=api.admin)

    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["error"]["details"]["errors"]] == [field]
    assert len(await list_tokens(db)) == 3


async def test_list__shows_every_token_and_never_a_secret_or_hash(
    api: Api, db: asyncpg.Connection
) -> None:
    created = await api.create("deploy bot", "ops")
    await api.http.delete(f"/api/tokens/{created['token']['id']}", headers=api.admin)

    response = await api.http.get("/api/tokens", headers=api.admin)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    listed = response.json()["tokens"]
    assert [(t["name"], t["role"], t["revoked_at"] is None) for t in listed] == [
        ("admin", "admin", True), ("ops", "ops", True), ("viewer", "viewer", True),
        ("deploy bot", "ops", False),
    ]  # fmt: skip
    assert all(set(t) == set(listed[0]) for t in listed)
    assert set(listed[0]) == {
        "id", "name", "role", "prefix", "created_at", "last_used_at", "revoked_at", "created_by"
    }  # fmt: skip
    stored_hashes = [row["token_hash"] for row in await db.fetch(HASHES)]
    assert created["secret"] not in response.text
    assert not any(digest in response.text for digest in stored_hashes)


async def test_revoke__the_token_is_401_on_its_next_request(api: Api) -> None:
    created = await api.create("leaver", "ops")
    assert (await api.http.get("/api/stats", headers=bearer(created["secret"]))).status_code == 200

    revoked = await api.http.delete(f"/api/tokens/{created['token']['id']}", headers=api.admin)
    after = await api.http.get("/api/stats", headers=bearer(created["secret"]))

    assert revoked.status_code == 200
    assert revoked.json()["already_revoked"] is False
    assert revoked.json()["token"]["revoked_at"] is not None
    assert after.status_code == 401
    assert error_code(after) == "unauthorized"


async def test_revoke__twice_answers_200_and_keeps_the_first_revocation(api: Api) -> None:
    created = await api.create("leaver", "ops")
    path = f"/api/tokens/{created['token']['id']}"

    first = await api.http.delete(path, headers=api.admin)
    second = await api.http.delete(path, headers=api.admin)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["already_revoked"] is True
    assert second.json()["token"] == first.json()["token"]


@pytest.mark.parametrize("token_id", ["999", "9223372036854775807", "99999999999999999999"])
async def test_revoke__an_unknown_id_is_404(api: Api, token_id: str) -> None:
    response = await api.http.delete(f"/api/tokens/{token_id}", headers=api.admin)

    assert response.status_code == 404
    assert error_code(response) == "token_not_found"


async def test_revoke__an_admin_may_revoke_its_own_token(api: Api, db: asyncpg.Connection) -> None:
    own_id = next(token.id for token in await list_tokens(db) if token.name == "admin")

    revoked = await api.http.delete(f"/api/tokens/{own_id}", headers=api.admin)
    after = await api.http.get("/api/tokens", headers=api.admin)

    assert revoked.status_code == 200
    assert after.status_code == 401
