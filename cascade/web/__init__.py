"""The web app's helpers: what web.py's thin endpoints call.

`http`: the error envelope, body limits, JSON parsing and the correlation id.
`deliveries`: webhook authenticity and de-duplication, shared by every provider.
`apify`, `validator`: one provider's delivery each, applied inside the caller's transaction.
`trigger`: POST /webhooks/trigger/{workflow}. `status`: GET /webhooks/status.
"""

from __future__ import annotations

from starlette.convertors import IntegerConvertor, register_url_convertor


class RowId(IntegerConvertor):
    """`{name:id}`: a row id in a path. Starlette's `int` matches any run of digits and then
    calls int() on it, which raises past Python's 4,300-digit limit (a 500 while matching
    routes). Up to a thousand digits the endpoint answers, naming what it did not find; a
    longer run matches no route: a 404 all the same."""

    regex = "[0-9]{1,1000}"


# Registered here, before any submodule builds its routes (Starlette compiles paths then).
register_url_convertor("id", RowId())
