"""The API document (cascade/web/openapi.py): it describes every route of the app and nothing
else, it is valid OpenAPI 3.1, it is served without a token, and what it says about roles,
bodies, parameters, errors and webhook signatures is what the routes do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import web
from cascade.web import openapi
from cascade.web.auth import required_role
from cascade.web.campaigns import NewCampaign
from cascade.web.tokens import NewToken

DOCUMENT = openapi.document(web.ROUTES)
HTTP_METHODS = {"get", "post", "put", "delete", "patch"}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def operation(method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = DOCUMENT["paths"][path][method.lower()]
    return found


def resolve(ref: str) -> dict[str, Any]:
    node: Any = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict), ref
    return node


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def keys(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys(item)


async def spare(request: Request) -> JSONResponse:
    return JSONResponse({})


# -- every route, no phantom ------------------------------------------------------------------


def test_document__describes_every_route_of_the_app() -> None:
    described = {(method, path) for method, path, _ in operations(DOCUMENT)}
    routes = {(served.method, served.path) for served in openapi.served(web.ROUTES)}

    missing = sorted(routes - described)
    assert missing == [], f"routes with no operation in cascade/web/openapi.py: {missing}"
    assert openapi.undescribed(web.ROUTES) == []


def test_document__has_no_operation_that_no_route_serves() -> None:
    described = {(method, path) for method, path, _ in operations(DOCUMENT)}
    routes = {(served.method, served.path) for served in openapi.served(web.ROUTES)}

    assert sorted(described - routes) == []
    assert openapi.phantoms(web.ROUTES) == []


def test_undescribed__names_a_route_added_without_an_operation() -> None:
    routes = [*web.ROUTES, Route("/api/new/{thing_id:int}", spare, methods=["GET", "PATCH"])]

    assert openapi.undescribed(routes) == [("GET", "/api/new/{thing_id}"),
                                           ("PATCH", "/api/new/{thing_id}")]  # fmt: skip


def test_phantoms__names_an_operation_whose_route_is_gone() -> None:
    routes = [r for r in web.ROUTES if getattr(r, "path", None) != "/api/stats"]

    assert openapi.phantoms(routes) == [("GET", "/api/stats")]


# -- a valid document, served without a token --------------------------------------------------


def test_document__is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(DOCUMENT).validate()  # raises on a schema error


def test_document__every_reference_resolves_and_no_defs_are_left_inline() -> None:
    for ref in refs(DOCUMENT):
        assert ref.startswith("#/components/"), ref
        resolve(ref)
    assert "$defs" not in set(keys(DOCUMENT["paths"])) | set(keys(DOCUMENT["components"]))


async def test_openapi_json__is_served_without_a_token_and_is_the_document(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == DOCUMENT


# -- what each operation says ------------------------------------------------------------------


def test_security__is_the_role_each_route_checks() -> None:
    for served in openapi.served(web.ROUTES):
        route = served.route
        role = required_role(route.endpoint) if isinstance(route, Route) else None
        spec = operation(served.method, served.path)

        if role is None:
            assert spec["security"] == [], served
            assert "x-cascade-role" not in spec
        else:
            assert spec["security"] == [{"bearer": []}], served
            assert spec["x-cascade-role"] == role
            assert spec["description"].startswith(f"Least role: {role}.")
            assert {"401", "429"} <= set(spec["responses"])


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/health", None),
        ("GET", "/ready", None),
        ("POST", "/webhooks/apify", None),
        ("GET", "/webhooks/status", None),
        ("GET", "/api/openapi.json", None),
        ("GET", "/metrics", "viewer"),
        ("GET", "/api/campaigns", "viewer"),
        ("POST", "/api/campaigns", "ops"),
        ("GET", "/api/tokens", "admin"),
        ("DELETE", "/api/tokens/{token_id}", "admin"),
    ],
)
def test_security__names_the_issues_roles(method: str, path: str, role: str | None) -> None:
    assert operation(method, path).get("x-cascade-role") == role


def test_security__403_is_documented_only_above_viewer() -> None:
    assert "403" not in operation("GET", "/api/stats")["responses"]
    assert "403" in operation("POST", "/api/campaigns/{campaign_id}/pause")["responses"]


@pytest.mark.parametrize(
    ("method", "path", "model"),
    [("POST", "/api/campaigns", NewCampaign), ("POST", "/api/tokens", NewToken)],
)
def test_request_body__is_the_model_the_endpoint_parses(
    method: str, path: str, model: type[Any]
) -> None:
    body = operation(method, path)["requestBody"]
    schema = resolve(body["content"]["application/json"]["schema"]["$ref"])

    assert body["required"] is True
    assert schema == openapi._standard(model.model_json_schema())
    assert {"400", "413", "415", "422"} <= set(operation(method, path)["responses"])


def test_request_body__is_optional_where_an_empty_body_is_read_as_empty() -> None:
    assert (
        operation("POST", "/api/campaigns/{campaign_id}/pause")["requestBody"]["required"] is False
    )
    assert operation("POST", "/webhooks/trigger/{workflow}")["requestBody"]["required"] is False


def test_schemas__use_json_schemas_own_bound_keywords() -> None:
    # pydantic writes gt/le for a Field after a BeforeValidator (fields.SlotId).
    slot_id = resolve("#/components/schemas/ApifyContact")["properties"]["slot_id"]

    assert slot_id["exclusiveMinimum"] == 0
    assert slot_id["maximum"] == 2**63 - 1
    numeric = [k for k in keys(DOCUMENT) if k in ("gt", "ge", "lt", "le")]
    assert numeric == []


def test_parameters__have_types_and_bounds() -> None:
    listed = {p["name"]: p for p in operation("GET", "/api/campaigns")["parameters"] if "name" in p}
    dead = {p["name"]: p for p in operation("GET", "/api/monitoring/dead-letters")["parameters"]
            if "name" in p}  # fmt: skip
    campaign_id = operation("GET", "/api/campaigns/{campaign_id}")["parameters"][0]
    workflow = operation("POST", "/webhooks/trigger/{workflow}")["parameters"][0]

    assert listed["limit"]["schema"] | {"title": None} == {
        "type": "integer", "minimum": 1, "maximum": 500, "default": 50, "title": None
    }  # fmt: skip
    assert listed["status"]["schema"]["enum"] == ["draft", "active", "paused", "completed",
                                                   "archived"]  # fmt: skip
    assert dead["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000,
                                       "default": 50}  # fmt: skip
    assert campaign_id == {
        "name": "campaign_id", "in": "path", "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    }  # fmt: skip
    assert workflow["schema"]["enum"] == ["full_pipeline", "lead_only", "messaging_only", "custom"]


def test_errors__every_error_answer_is_the_shared_envelope() -> None:
    envelope = DOCUMENT["components"]["schemas"]["Error"]
    assert envelope["properties"]["error"]["required"] == ["code", "message", "details"]
    for method, path, spec in operations(DOCUMENT):
        for status, answer in spec["responses"].items():
            if int(status) < 400:
                continue
            answer = resolve(answer["$ref"]) if "$ref" in answer else answer
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_answers__each_operation_has_a_success_and_returns_the_correlation_id() -> None:
    for method, path, spec in operations(DOCUMENT):
        statuses = [int(status) for status in spec["responses"]]
        assert any(200 <= status < 300 for status in statuses), (method, path)
        assert {"$ref": "#/components/parameters/CorrelationId"} in spec["parameters"]
        for answer in spec["responses"].values():
            answer = resolve(answer["$ref"]) if "$ref" in answer else answer
            assert "x-correlation-id" in answer["headers"], (method, path)


@pytest.mark.parametrize(
    "path",
    [f"/webhooks/{name}" for name in web.WEBHOOK_PROVIDERS if name != "trigger"]
    + ["/webhooks/trigger/{workflow}"],
)
def test_webhooks__document_their_signature_headers_and_401(path: str) -> None:
    spec = operation("POST", path)
    headers = {p["name"] for p in spec["parameters"] if p.get("in") == "header"}

    assert {"webhook-id", "webhook-timestamp", "webhook-signature", "stripe-signature",
            "x-webhook-secret"} <= headers  # fmt: skip
    assert spec["responses"]["401"] == {"$ref": "#/components/responses/InvalidSignature"}
    assert spec["security"] == []


def test_webhooks__only_the_grouped_one_documents_503_busy_with_retry_after() -> None:
    busy = [
        path
        for _, path, spec in operations(DOCUMENT)
        if path.startswith("/webhooks/") and "503" in spec["responses"]
    ]
    answer = resolve(operation("POST", "/webhooks/instantly")["responses"]["503"]["$ref"])

    assert busy == ["/webhooks/instantly"]
    assert answer["headers"]["Retry-After"]["required"] is True
