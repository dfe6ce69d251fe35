"""One web server process for the webhook ingestion benchmark (bench/webhooks.py starts it).

    python -m bench.webhook_server real    --port P [--loop asyncio] [--http h11] [--variant V]
    python -m bench.webhook_server ceiling --port P [--loop asyncio] [--http h11]

`real` serves `web.create_app(DATABASE_URL, environ)`, the production app, with this process's
environment (the benchmark sets the webhook secrets). `ceiling` serves a plain Starlette app
with one route that reads the body and answers 202 with a small JSON body: what this machine,
this Python and these uvicorn settings can do with no work at all. Both run under uvicorn
with the same settings: one worker, the given event loop and HTTP implementation, no access
log, no log config (warnings still reach stderr), and the garbage collector tuned as
`cascade web` tunes it (cascade.cli.tune_gc).

A `--variant` changes the real app in this process only, to measure what a proposed change
would buy before anyone makes it (none of them is in the app):

* `walk-off`: parse without http.parse's model_dump() and unstorable() walk for NUL characters
  and non-finite numbers; an invalid body still goes through the original parse, so only the
  successful path changes.
* (`no-pool-reset` and `fused-claim` were variants here until the app adopted both.)
* `one-statement` (POST /webhooks/instantly only; a prototype, not a port of instantly.py):
  the whole delivery of an open or click found by `email_id` in one statement outside an
  explicit transaction, so one round trip instead of BEGIN, set_config, claim, lookup,
  insert, COMMIT. Replies and deliveries without `email_id` go to the app's own endpoint:
  the prototype measures the common path, it does not replace the endpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, LiteralString, TypeVar

import uvicorn
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cascade.cli import tune_gc

HOST = "127.0.0.1"
CEILING_PATH = "/{path:path}"  # any path, so the load needs no per-target change

# The `one-statement` prototype: set the correlation id, claim, find the message Instantly
# names, record the engagement (whose statement trigger emits the event, reading the
# correlation id), in one implicit transaction. `claimed` is false for a duplicate.
INSTANTLY_IN_ONE_STATEMENT: LiteralString = """
    WITH correlation AS (SELECT set_config('cascade.correlation_id', $5, true)),
    claimed AS (
        INSERT INTO marketing.processed_webhook_events
            (provider, event_key, event_name, verified, correlation_id)
        SELECT 'instantly', $1, $2, $3, $5 FROM correlation
        ON CONFLICT (provider, event_key) DO NOTHING
        RETURNING event_key
    ),
    target AS (
        SELECT contact_id, id AS message_id, campaign_id
          FROM marketing.message_queue
         WHERE provider = 'instantly' AND provider_message_id = $6
         ORDER BY id DESC
         LIMIT 1
    ),
    recorded AS (
        INSERT INTO marketing.engagement_events
            (contact_id, message_id, campaign_id, event_type, metadata, provider,
             provider_event_id, occurred_at)
        SELECT t.contact_id, t.message_id, t.campaign_id, $4, $7::jsonb, 'instantly',
               c.event_key, coalesce($8, now())
          FROM claimed AS c, target AS t
        ON CONFLICT ON CONSTRAINT engagement_events_provider_event_key DO NOTHING
        RETURNING id, contact_id, message_id
    )
    SELECT EXISTS (SELECT FROM claimed) AS claimed, r.id, r.contact_id, r.message_id
      FROM (SELECT) AS one LEFT JOIN recorded AS r ON true
"""

Model = TypeVar("Model", bound=BaseModel)


async def accept(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"status": "accepted"}, 202)


def ceiling_app() -> Starlette:
    return Starlette(routes=[Route(CEILING_PATH, accept, methods=["POST"])])


def real_app() -> Starlette:
    from web import create_app

    return create_app(os.environ["DATABASE_URL"], os.environ)


def walk_off() -> None:
    from cascade.web import deliveries, http

    def parse_unchecked(model: type[Model], body: bytes) -> Model:
        try:
            return model.model_validate_json(body or b"{}")
        except ValidationError:
            return http.parse(model, body)  # raises the same ApiError as production

    # receive() looks `parse` up in its module's namespace at each call.
    vars(deliveries)["parse"] = parse_unchecked


def one_statement() -> None:
    import web
    from cascade.web import instantly
    from cascade.web.deliveries import receive

    production = next(
        route.endpoint
        for route in web.ROUTES
        if isinstance(route, Route) and route.path == "/webhooks/instantly"
    )

    async def endpoint(request: Request) -> Response:
        # Read once into the request's cache, so the app's endpoint can read it again below.
        await request.body()
        config = web._config(request)
        delivery = await receive(
            request, config.sources["instantly"], instantly.InstantlyEvent,
            instantly.composite_key,
        )  # fmt: skip
        event = delivery.body
        if event.kind == "reply" or event.data.email_id is None:
            # Outside what the prototype covers: the app's own endpoint.
            answer: Response = await production(request)
            return answer
        row = await web._pool(request).fetchrow(
            INSTANTLY_IN_ONE_STATEMENT, delivery.key, event.event_type, delivery.verified,
            event.kind, delivery.correlation_id, event.data.email_id, event.metadata(),
            event.data.timestamp,
        )  # fmt: skip
        assert row is not None  # the outer SELECT always yields one row
        if not row["claimed"]:
            return web._duplicate(delivery)
        return web._accepted(delivery, _summary(event, row))

    # create_app builds the app from web.ROUTES when it is called, after this.
    web.ROUTES[:] = [
        Route(route.path, endpoint, methods=["POST"])
        if isinstance(route, Route) and route.path == "/webhooks/instantly"
        else route
        for route in web.ROUTES
    ]


def _summary(event: Any, row: Any) -> dict[str, Any]:
    """instantly.Summary's shape (a new row, or none: the message is unknown)."""
    if row["id"] is None:
        return {"applied": [], "skipped": [], "unknown_lead_emails": [event.data.lead_email]}
    applied = {"event": event.kind, "contact_id": row["contact_id"],
               "message_id": row["message_id"], "engagement_event_id": row["id"]}  # fmt: skip
    return {"applied": [applied], "skipped": [], "unknown_lead_emails": []}


VARIANTS: dict[str, Callable[[], None]] = {
    "walk-off": walk_off,
    "one-statement": one_statement,
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", choices=["real", "ceiling"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="asyncio", help="uvicorn's loop setting")
    parser.add_argument("--http", default="h11", help="uvicorn's http setting")
    parser.add_argument("--variant", action="append", default=[], choices=sorted(VARIANTS))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    for variant in args.variant:
        VARIANTS[variant]()
    app = real_app() if args.app == "real" else ceiling_app()
    tune_gc()  # as `cascade web` does, for both servers
    uvicorn.run(
        app,
        host=HOST,
        port=args.port,
        loop=args.loop,
        http=args.http,
        workers=None,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
