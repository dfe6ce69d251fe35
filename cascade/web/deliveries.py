"""What every webhook delivery goes through before its effects: authenticity, parsing, and
de-duplication.

Order matters. The signature is checked on the raw bytes before anything is parsed (a forged
body never reaches pydantic); then the body is parsed, so bad input is refused before any
transaction opens; then, inside the endpoint's one transaction, `claim` records the delivery
in marketing.processed_webhook_events. The claim and the delivery's effects commit together:
a redelivery finds the row and changes nothing, or finds none because the first attempt left
no trace. Concurrent copies of one delivery wait on the primary key until the first commits,
then find it.

The delivery's key is the provider's own id: the Standard Webhooks `webhook-id` header (signed
with the body, when verified), else Apify's `x-apify-webhook-dispatch-id`; else, for a
provider whose events carry no id, the documented composite key its endpoint derives from the
parsed body (Instantly's: cascade/web/instantly.py); else `sha256:` + the hex SHA-256 of the
raw body, so byte-identical redeliveries are caught and anything else is a new delivery.
Under the Stripe scheme the id headers are not read: it signs the timestamp and the body but
no header, so within the tolerance a captured delivery could be resent under a fresh id (and
apply again) or under the id of a delivery still to come (which would then be dropped as its
duplicate).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, LiteralString, TypeVar

from pydantic import BaseModel

from cascade.handling import Connection
from cascade.web.http import ApiError, parse
from cascade.web.metrics import WEBHOOK_VERIFICATION_FAILURES
from cascade.webhooks.signatures import ProviderSecrets, Scheme, verify

log = logging.getLogger("cascade.web")

DELIVERY_ID_HEADERS = ("webhook-id", "x-apify-webhook-dispatch-id")
MAX_KEY_LENGTH = 200

# Returns a row only for the first copy of a delivery; ON CONFLICT waits for a concurrent
# first copy to commit or roll back before deciding. The same round trip sets the request's
# correlation id for the rest of the transaction, so every event the delivery's writes emit
# carries it (marketing.pipeline_events.correlation_id defaults to the setting): the CTE runs
# set_config before the INSERT reads its one row (a CTE with a volatile function is never
# inlined). One statement instead of two: round trips are most of a delivery's cost
# (bench/RESULTS.md, "Webhook ingestion").
CLAIM_DELIVERY: LiteralString = """
    WITH correlation AS (SELECT set_config('cascade.correlation_id', $5, true))
    INSERT INTO marketing.processed_webhook_events
        (provider, event_key, event_name, verified, correlation_id)
    SELECT $1, $2, $3, $4, $5 FROM correlation
    ON CONFLICT (provider, event_key) DO NOTHING
    RETURNING true
"""

Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class WebhookSource:
    """One provider's endpoint: its secrets, and the header that carries a Stripe-style or
    shared-secret signature (None: the scheme's default header)."""

    secrets: ProviderSecrets
    header: str | None = None

    @classmethod
    def from_env(
        cls, provider: str, environ: Mapping[str, str], default: Scheme = Scheme.STANDARD
    ) -> WebhookSource:
        """`default` (Standard Webhooks unless the provider can do no better) unless
        `WEBHOOK_SCHEME_<PROVIDER>` names another scheme (Apify, for one, can only send a
        fixed header: `shared_secret`)."""
        variable = "WEBHOOK_SCHEME_" + provider.upper()
        scheme = Scheme(environ.get(variable, default.value).strip() or default.value)
        source = cls(ProviderSecrets.from_env(provider, environ, scheme=scheme))
        if not source.signed:
            log.warning(
                "%s is not set: /webhooks/%s ACCEPTS UNSIGNED DELIVERIES, marked unverified",
                source.secrets.variable,
                provider,
            )
        return source

    @property
    def provider(self) -> str:
        return self.secrets.provider

    @property
    def signed(self) -> bool:
        return bool(self.secrets.keys) and self.secrets.scheme is not Scheme.NONE

    @property
    def trusts_id_headers(self) -> bool:
        """Whether a delivery's id header may key it: not when the body is signed and the
        header is not (Stripe's scheme). A shared secret travels with each delivery, so one
        captured there can be forged outright, and the header loses nothing more."""
        return not (self.signed and self.secrets.scheme is Scheme.STRIPE)

    def check(self, headers: Mapping[str, str], body: bytes) -> bool:
        """True if verified, False if accepted unverified; 401 if rejected."""
        verification = verify(self.secrets, headers, body, time.time(), header=self.header)
        if not verification.accepted:
            WEBHOOK_VERIFICATION_FAILURES.labels(provider=self.provider).inc()
            raise ApiError(
                401, "invalid_signature", verification.message, {"reason": verification.code}
            )
        if verification.status == "unverified":
            _warn_unverified(self.provider, verification.message)
        return verification.status == "verified"


# Unsigned deliveries are announced at start (from_env) and then at most once a minute per
# provider with their count: loud enough to be seen, never a line per request.
UNVERIFIED_WARNING_SECONDS = 60.0
_unverified_tally: dict[str, tuple[float, int]] = {}


def _warn_unverified(provider: str, message: str) -> None:
    now = time.monotonic()
    warned_at, count = _unverified_tally.get(provider, (-math.inf, 0))
    count += 1
    if now - warned_at < UNVERIFIED_WARNING_SECONDS:
        _unverified_tally[provider] = (warned_at, count)
        return
    _unverified_tally[provider] = (now, 0)
    log.warning(
        "UNVERIFIED %s webhooks accepted: %d since the last warning; %s", provider, count, message
    )


@dataclass(frozen=True)
class Delivery(Generic[Body]):
    provider: str
    body: Body
    key: str
    verified: bool
    correlation_id: str
    # The provider's composite key of the body, when it has one (computed once, here: the
    # Instantly webhook stores it again as the engagement row's provider_event_id).
    composite_key: str | None = None


# A provider's composite delivery key, from the parsed body; None when the body lacks a part.
CompositeKey = Callable[[Body], str | None]


def read_delivery(
    source: WebhookSource,
    model: type[Body],
    headers: Mapping[str, str],
    raw: bytes,
    correlation_id: str,
    composite_key: CompositeKey[Body] | None = None,
) -> Delivery[Body]:
    """Authenticate and parse one delivery, read whole as `raw`; nothing is written yet."""
    verified = source.check(headers, raw)
    body = parse(model, raw)
    composite = composite_key(body) if composite_key is not None else None
    key = delivery_key(headers if source.trusts_id_headers else {}, raw, composite)
    return Delivery(source.provider, body, key, verified, correlation_id, composite)


def delivery_key(headers: Mapping[str, str], raw: bytes, composite: str | None = None) -> str:
    for value in (*(headers.get(name, "").strip() for name in DELIVERY_ID_HEADERS), composite):
        if value:
            return bounded_key(value)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def bounded_key(value: str) -> str:
    """`value`, or when it is absurdly long its hash rather than a cut, so two never collide
    (and a key always fits a btree index)."""
    if len(value) > MAX_KEY_LENGTH:
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return value


async def claim(conn: Connection, delivery: Delivery[Body], event_name: str) -> bool:
    """Inside the delivery's transaction: True for its first copy, False for a duplicate."""
    first = await conn.fetchval(
        CLAIM_DELIVERY,
        delivery.provider,
        delivery.key,
        event_name,
        delivery.verified,
        delivery.correlation_id,
    )
    return bool(first)
