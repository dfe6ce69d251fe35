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
* (`one-statement`, a prototype of an open in one statement, was a variant here until the
  group commit (cascade/web/group_commit.py) took its place; bench/webhook_sql.py still
  measures its SQL.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import uvicorn
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cascade.cli import tune_gc

HOST = "127.0.0.1"
CEILING_PATH = "/{path:path}"  # any path, so the load needs no per-target change

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

    # read_delivery() looks `parse` up in its module's namespace at each call.
    vars(deliveries)["parse"] = parse_unchecked


VARIANTS: dict[str, Callable[[], None]] = {
    "walk-off": walk_off,
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
