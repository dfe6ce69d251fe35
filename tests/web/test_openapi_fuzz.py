"""schemathesis against the API document: the real app under uvicorn on a database of its own,
fuzzed over real HTTP, every operation of the document with valid and invalid input. No answer
may be a 500, and every answer must be one the document describes.

The document is the one GET /api/openapi.json serves (tests/web/test_openapi.py checks they are
equal), built in-process so that pytest can collect one test per operation. (Loading it from
the running server needs `schemathesis.pytest.from_fixture`, which fails on pytest 9.2: it sets
`Function._nodeid`, an attribute pytest 9.2 no longer has.)

The fuzzer holds an admin token, so it reaches every route's code rather than stopping at the
401; no webhook has a secret, so unsigned deliveries get through to the parsing and the writes.
Generation is seeded and derandomized, so a run repeats the previous one's requests.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

import web
from cascade import database
from cascade.web import openapi
from cascade.web.auth import TOKEN_PREFIX, hash_token, token_prefix
from tests.conftest import create_database, drop_database, scratch_folder
from tests.web.conftest import running_server

# Made at import: schemathesis builds its coverage cases, headers included, when pytest collects
# this module, before any fixture runs. The `target` fixture stores its hash as an admin token.
SECRET = TOKEN_PREFIX + secrets.token_urlsafe(32)
ADD_ADMIN = """
    INSERT INTO marketing.api_tokens (name, role, token_hash, prefix, created_by)
    VALUES ('schemathesis', 'admin', %s, %s, 'test') RETURNING id
"""
# DELETE /api/tokens/{id} may well pick the fuzzer's own id: it is un-revoked before each case,
# so every later request still reaches its route's code.
UNREVOKE = "UPDATE marketing.api_tokens SET revoked_at = NULL WHERE id = %s"
NO_LIMIT = {"CASCADE_RATE_LIMIT_PER_MINUTE": "600000", "CASCADE_RATE_LIMIT_BURST": "100000"}

EXAMPLES = 20  # per operation and phase: about 25 s for the whole document on 2 cores
SEED = 20240604
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "auth": {"openapi": {"bearer": {"bearer": SECRET}}},  # the document's security scheme
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        # A body valid by the schema may still be refused, with the 422 the document lists:
        # JSON Schema cannot say "a cron expression that fires", "an IANA time zone", "a CSV
        # in the import folder" or "a mapped process key".
        "checks": {"positive_data_acceptance": {"enabled": False}},
        "operations": [
            # 503 is /ready's designed answer while no listener runs, as none does here.
            {
                "include-path": "/ready",
                "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "503"]}},
            },
        ],
    }
)

schema = schemathesis.openapi.from_dict(openapi.document(web.ROUTES), config=CONFIG)


@dataclass(frozen=True)
class Target:
    base_url: str
    tokens: psycopg.Connection  # to the app's database, for UNREVOKE
    token_id: int


@pytest.fixture(scope="module")
def target(server_url: str, template_name: str) -> Iterator[Target]:
    """One app and database for every operation: the fuzzer's writes pile up, as they would."""
    name = create_database(server_url, template_name)
    url = database.with_database(server_url, name)
    # An empty import folder: a fuzzed workflow trigger can name no CSV, so it starts no import.
    with scratch_folder() as imports, psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(ADD_ADMIN, (hash_token(SECRET), token_prefix(SECRET))).fetchone()
        assert row is not None
        environ = NO_LIMIT | {"CASCADE_IMPORT_DIR": str(imports)}
        with running_server(url, environ) as base_url:
            yield Target(base_url, conn, row[0])
    drop_database(server_url, name)


@schema.parametrize()
def test_api__every_answer_is_documented_and_none_is_a_server_error(
    case: Case[Any], target: Target
) -> None:
    target.tokens.execute(UNREVOKE, (target.token_id,))
    case.call_and_validate(base_url=target.base_url)
