"""HTTP plumbing shared by every endpoint: one error envelope, bounded JSON bodies, pydantic
errors that name the field, and the request's correlation id.

Errors use seed 004's envelope `{"error": {"code", "message", "details"}}`. A body is refused
before it is read when its Content-Length is too large, and while it is read when a chunked
body turns out too large, so an oversized delivery never sits in memory whole.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seed 004: webhook bodies are capped at 1 MB.
MAX_BODY_BYTES = 1024 * 1024
CORRELATION_HEADER = "x-correlation-id"
# Printable ASCII without spaces, bounded: it lands in logs, events and a response header.
_CORRELATION_ID = re.compile(r"[\x21-\x7e]{1,128}")

Model = TypeVar("Model", bound=BaseModel)


class ApiError(Exception):
    """Raised anywhere below an endpoint; answered in the envelope by `api_error_response`."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = dict(headers or {})  # besides the correlation id: Retry-After, say

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def envelope(
    status: int, code: str, message: str, details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    return JSONResponse(ApiError(status, code, message, details).envelope(), status, headers)


async def api_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)  # registered for ApiError only
    return envelope(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def unexpected_error_response(request: Request, exc: Exception) -> Response:
    """A bug's answer: the envelope, never plain text or a traceback. Starlette raises the
    exception again after this answer, so the server logs it with its traceback; the
    correlation id ties the two together."""
    found = getattr(request.state, "correlation_id", None)  # unset if the bug came first
    response = JSONResponse(internal_error(found).envelope(), 500)
    if found is not None:
        response.headers[CORRELATION_HEADER] = found  # outside CorrelationId: set it here
    return response


def internal_error(correlation_id: str | None) -> ApiError:
    message = "the server failed on this request; the failure is logged"
    return ApiError(500, "internal_error", message, {"correlation_id": correlation_id})


async def http_error_response(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in the envelope too."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = envelope(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110: Allow lists every method the path answers. Starlette's names only those of
        # the first route that matched the path, and a path may have a route per method.
        response.headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
    return response


def _allowed_methods(request: Request) -> set[str]:
    # Matched as the app saw the request: inside a Mount, root_path has grown by its prefix.
    root_path = request.scope.get("app_root_path", request.scope.get("root_path", ""))
    scope = {**request.scope, "root_path": root_path}
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(scope)[0] is Match.NONE:
            continue
        if isinstance(route, Route):
            methods |= route.methods or set()
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            methods |= {"GET", "HEAD"}  # all StaticFiles answers
    return methods


class CorrelationId:
    """Accepts `x-correlation-id` (or makes one), exposes it as `request.state.correlation_id`
    and returns it on every response, errors included. A value that is not a short printable
    token is replaced, not echoed: it would otherwise reach logs and headers verbatim."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = correlation_id_of(Headers(scope=scope))
        scope.setdefault("state", {})["correlation_id"] = correlation_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def correlation_id_of(headers: Mapping[str, str]) -> str:
    """The request's `x-correlation-id` if it is a short printable token, else a new one."""
    given = headers.get(CORRELATION_HEADER, "")
    return given if _CORRELATION_ID.fullmatch(given) else _new_correlation_id()


def _new_correlation_id() -> str:
    """32 random hex digits, as uuid4().hex gives, without its os.urandom system call per
    request (~3 % of a webhook's CPU in the ingestion bench's profile): a correlation id
    ties log lines and events together and guards nothing, so it needs to be unique, not
    unguessable. (random is reseeded in a forked worker.)"""
    return f"{random.getrandbits(128):032x}"


def correlation_id(request: Request) -> str:
    value: str = request.state.correlation_id
    return value


async def read_json_body(request: Request, *, allow_empty: bool = False) -> bytes:
    """The raw body of a JSON request, at most MAX_BODY_BYTES. 415 for another media type,
    413 when too large. `allow_empty` lets a body-less POST through as b""."""
    return await read_json(request.headers, request.stream(), allow_empty=allow_empty)


async def read_json(
    headers: Mapping[str, str], stream: AsyncIterator[bytes], *, allow_empty: bool = False
) -> bytes:
    """`read_json_body` of a request given as its headers and its body's chunks."""
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    declared = headers.get("content-length", "")
    if allow_empty and declared == "0" and not media_type:
        return b""
    if media_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected Content-Type application/json, got {media_type or 'none'}",
        )
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


# -- the ASGI side, for an endpoint that skips Starlette's request and response (web.Webhook) --


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (ASGI gives them lower-cased), the first of
    repeated ones as Starlette's Headers.get gives it."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return headers


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives; ClientDisconnect if the client leaves first."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def send_json(
    send: Send, status: int, content: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """`content` as JSONResponse would answer it (compact UTF-8), written straight to ASGI,
    with `headers` (raw: lower-case name, value) besides its type and length."""
    body = pydantic_core.to_json(content)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _too_large() -> ApiError:
    message = f"the body exceeds {MAX_BODY_BYTES} bytes"
    return ApiError(413, "payload_too_large", message, {"limit": MAX_BODY_BYTES})


def parse(model: type[Model], body: bytes) -> Model:
    """The body as `model`: 400 if it is not JSON at all, 422 naming each bad field, and 422
    for a value PostgreSQL cannot store (checked here once, for every endpoint)."""
    try:
        parsed = model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        if any(problem["type"] == "json_invalid" for problem in exc.errors()):
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        raise invalid(exc) from None
    problem = unstorable(parsed.model_dump())
    if problem is not None:
        field, message = problem
        error = {"field": field, "message": message, "type": "unstorable"}
        raise ApiError(422, "invalid_payload", f"{field}: {message}", {"errors": [error]})
    return parsed


def unstorable(value: object, path: str = "") -> tuple[str, str] | None:
    """Where `value` holds what PostgreSQL refuses: a NUL character (text and jsonb cannot
    hold one) or a number that is not finite (JSON's NaN and Infinity, which pydantic accepts
    and jsonb does not). None when all of it can be stored."""
    if isinstance(value, str):
        return (path or "(body)", "contains a NUL character") if "\x00" in value else None
    if isinstance(value, float) and not math.isfinite(value):
        return (path or "(body)", f"{value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return (where, "the key contains a NUL character")
            if (found := unstorable(item, where)) is not None:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := unstorable(item, f"{path}[{index}]")) is not None:
                return found
    return None


def invalid(exc: ValidationError) -> ApiError:
    """A 422 naming every field pydantic refused, as `payload.contacts[0].email`."""
    fields = [
        {"field": _field(problem["loc"]), "message": problem["msg"], "type": problem["type"]}
        for problem in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return ApiError(422, "invalid_payload", summary, {"errors": fields})


def _field(location: tuple[int | str, ...]) -> str:
    """`payload.contacts[0].email` from pydantic's ('payload', 'contacts', 0, 'email')."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(body)"
