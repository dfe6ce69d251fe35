"""What every provider client shares: the results it returns, the faults it raises, and the
HTTP discipline it follows (httpx with timeouts; tenacity retrying 429 with Retry-After, 5xx
and transport errors; never a 4xx).

A client runs `live` when its credentials are set and `sandbox` otherwise: the same code,
talking through an in-process transport (providers/sandbox.py) that answers in the
provider's own format with invented, deterministic data, so the whole phase runs offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

Mode = Literal["live", "sandbox"]
Role = Literal["CEO", "CFO", "HR"]


@dataclass(frozen=True, slots=True)
class ContactQuery:
    """Whom the waterfall is looking for: one role at one company."""

    company_name: str
    domain: str
    role: Role
    country: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A person a provider proposes for a slot, with its confidence in [0, 1]."""

    full_name: str
    first_name: str | None
    last_name: str | None
    title: str | None
    email: str | None
    linkedin_url: str | None
    country: str | None
    confidence: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """One synchronous provider call's answer: the candidates found (best first, maybe
    none), what the call cost and how long it took."""

    provider: str
    mode: Mode
    candidates: tuple[Candidate, ...]
    cost: Decimal
    latency_ms: float


@dataclass(frozen=True, slots=True)
class StartedRun:
    """An asynchronous provider's run (Apify): its id, to be completed by webhook."""

    provider: str
    mode: Mode
    run_id: str
    cost: Decimal
    latency_ms: float


VerificationResult = Literal["ok", "catch_all", "unknown", "invalid", "disposable"]


@dataclass(frozen=True, slots=True)
class EmailCheck:
    """The verifier's word on one address. `score` is in [0, 1]."""

    provider: str
    mode: Mode
    email: str
    result: VerificationResult
    score: float
    quality: str | None
    subresult: str | None
    cost: Decimal
    latency_ms: float
    raw: dict[str, object] = field(default_factory=dict, compare=False)


class ProviderError(Exception):
    """A provider call failed after its short retries. `status` is the HTTP status if any;
    `cost` is what the failed call still cost."""

    def __init__(
        self, provider: str, message: str, *, status: int | None = None, cost: Decimal = Decimal(0)
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status
        self.cost = cost


class ProviderUnavailable(ProviderError):
    """Transient: 5xx, timeouts, connection errors, malformed answers. Worth trying later."""


class ProviderRateLimited(ProviderError):
    """429 that outlasted the short retries: try again after `retry_after` seconds."""

    def __init__(self, provider: str, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(provider, f"{message}; retry after {retry_after:g}s", status=429)
        self.retry_after = retry_after


class ProviderRejected(ProviderError):
    """A 4xx other than 429 (bad key, bad request): retrying the same call cannot help."""


class ProviderFault(ProviderError):
    """The provider answered but said it failed (MillionVerifier's HTTP 200 with
    `result: error`: bad key, no credits). Never a verdict on the data asked about."""


class ContactFinder(Protocol):
    """A synchronous enrichment provider (PeopleDataLabs, Prospeo): one call, one answer."""

    name: str
    mode: Mode
    cost_per_call: Decimal

    async def find(self, query: ContactQuery, *, idempotency_key: str) -> Lookup: ...


class RunStarter(Protocol):
    """An asynchronous enrichment provider (Apify): a call starts a run whose results come
    back later by webhook (POST /webhooks/apify)."""

    name: str
    mode: Mode
    cost_per_call: Decimal

    async def start_run(
        self,
        query: ContactQuery,
        *,
        slot_ids: tuple[int, ...],
        webhook_url: str,
        idempotency_key: str,
    ) -> StartedRun: ...


class EmailVerifier(Protocol):
    """An email verification provider (MillionVerifier)."""

    name: str
    mode: Mode
    cost_per_call: Decimal

    async def verify(self, email: str, *, idempotency_key: str) -> EmailCheck: ...
