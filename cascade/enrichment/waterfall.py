"""The enrichment waterfall of seed 004 §9, for one role slot at one company.

1. Parallel phase: a slot nothing has been asked for yet goes to the first `fanout`
   synchronous providers at once; every candidate they return is judged (an email, the
   region rule, confidence >= threshold) and the most confident accepted one fills the slot.
2. Fallback phase: otherwise the remaining providers are asked one at a time, in order. An
   asynchronous provider (Apify) starts a run and the slot waits for its webhook, or for its
   deadline, after which the waterfall goes on without it.
3. A slot that every provider has answered without a usable contact ends `unfilled`, with a
   reason naming each provider's answer. A provider that fails for a passing reason (outage,
   429, budget used up) is asked again later (`Deferred`); after `max_provider_failures` such
   failures it counts as tried, so a slot can never loop for ever.

This module decides and calls; it never touches the database. The handler
(handlers/slots_created.py) reads the slot, runs `advance`, records the attempts and writes
the outcome.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from cascade.budgets import BudgetExhausted
from cascade.enrichment.regions import email_type, needs_professional_email
from cascade.enrichment.settings import ASYNC_PROVIDERS, SYNC_PROVIDERS, EnrichmentSettings
from providers import ProviderSet
from providers.base import (
    Candidate,
    ContactQuery,
    Mode,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    Role,
)

# Reserves a provider call's cost against the enrichment budget; raises BudgetExhausted.
Spend = Callable[[Decimal], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Company:
    id: int
    name: str
    domain: str
    country: str | None


@dataclass(frozen=True, slots=True)
class Slot:
    """A slot as read before the providers are called; the write-back checks it is unchanged."""

    id: int
    role: Role
    status: str
    providers_tried: tuple[str, ...]
    pending_provider: str | None
    pending_run_id: str | None
    pending_deadline: dt.datetime | None
    provider_failures: dict[str, int]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One row of marketing.provider_attempts."""

    provider: str
    mode: str
    phase: str
    status: str
    confidence: float | None = None
    cost: Decimal = Decimal(0)
    latency_ms: float | None = None
    external_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Filled:
    candidate: Candidate
    email_type: str
    provider: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class Awaiting:
    provider: str
    run_id: str
    deadline: dt.datetime


@dataclass(frozen=True, slots=True)
class Unfilled:
    reason: str


@dataclass(frozen=True, slots=True)
class Deferred:
    retry_at: dt.datetime
    reason: str


Outcome = Filled | Awaiting | Unfilled | Deferred


@dataclass(slots=True)
class Advance:
    """What one pass did to a slot: its new position in the waterfall and what came of it."""

    slot: Slot
    outcome: Outcome
    tried: list[str]
    failures: dict[str, int]
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Judgement:
    accepted: Candidate | None
    status: str
    confidence: float | None
    detail: str | None


def judge(candidates: tuple[Candidate, ...], threshold: float, country: str | None) -> Judgement:
    """The best candidate that has an email, passes the region rule and clears the threshold;
    otherwise why none did."""
    if not candidates:
        return Judgement(None, "not_found", None, None)
    best_rejected: tuple[str, float, str] | None = None
    for candidate in sorted(candidates, key=lambda c: c.confidence, reverse=True):
        if not candidate.email:
            verdict = ("not_found", candidate.confidence, "candidate without an email")
        elif email_type(candidate.email) == "personal" and needs_professional_email(
            candidate.country or country
        ):
            verdict = (
                "filtered",
                candidate.confidence,
                f"personal email in {candidate.country or country}: professional only",
            )
        elif candidate.confidence < threshold:
            verdict = (
                "below_threshold",
                candidate.confidence,
                f"confidence {candidate.confidence:.2f} below {threshold:.2f}",
            )
        else:
            return Judgement(candidate, "found", candidate.confidence, None)
        best_rejected = best_rejected or verdict
    status, confidence, detail = best_rejected or ("not_found", None, None)
    return Judgement(None, status, confidence, detail)


class Waterfall:
    def __init__(
        self,
        settings: EnrichmentSettings,
        providers: ProviderSet,
        spend: Spend,
        now: Callable[[], dt.datetime],
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.spend = spend
        self.now = now

    async def advance(self, company: Company, slot: Slot, key: str) -> Advance | None:
        """One pass over the slot; None when there is nothing to do yet (a run in flight)."""
        step = Advance(slot, Unfilled(""), list(slot.providers_tried), dict(slot.provider_failures))
        if slot.status == "awaiting_provider":
            if slot.pending_deadline is not None and slot.pending_deadline > self.now():
                return None
            step.attempts.append(
                Attempt(
                    slot.pending_provider or "?",
                    "unknown",
                    "async",
                    "timeout",
                    external_id=slot.pending_run_id,
                    detail=f"no webhook within {self.settings.apify_timeout:g}s",
                )
            )
        query = ContactQuery(company.name, company.domain, slot.role, company.country)
        remaining = [p for p in self.settings.providers if p not in step.tried]
        deferred: list[Deferred] = []
        judged: list[tuple[Judgement, str, Mode]] = []
        if not slot.providers_tried:
            parallel = [p for p in remaining if p in SYNC_PROVIDERS][: self.settings.fanout]
            answers = await asyncio.gather(
                *(self._ask(name, query, company, step, "parallel", key) for name in parallel)
            )
            for name, answer in zip(parallel, answers, strict=True):
                remaining.remove(name)
                if isinstance(answer, Deferred):
                    deferred.append(answer)
                elif answer is not None:
                    judged.append(answer)
            accepted = [j for j in judged if j[0].accepted is not None]
            if accepted:
                best, name, mode = max(accepted, key=lambda j: j[0].confidence or 0.0)
                assert best.accepted is not None
                step.outcome = _filled(best.accepted, name, mode)
                return step
        for name in remaining:
            if deferred and any(d.reason.startswith("budget") for d in deferred):
                break  # the budget is spent: ask no one else this pass
            if name in ASYNC_PROVIDERS:
                if deferred:
                    break  # a passing failure first: retry it before handing off to a run
                started = await self._start_run(name, query, slot, step, key)
                if isinstance(started, Awaiting | Deferred):
                    step.outcome = started
                    return step
                continue
            answer = await self._ask(name, query, company, step, "fallback", key)
            if isinstance(answer, Deferred):
                deferred.append(answer)
            elif answer is not None and answer[0].accepted is not None:
                step.outcome = _filled(answer[0].accepted, answer[1], answer[2])
                return step
        if deferred:
            step.outcome = max(deferred, key=lambda d: d.retry_at)
        else:
            step.outcome = Unfilled(_unfilled_reason(step.attempts))
        return step

    async def _ask(
        self, name: str, query: ContactQuery, company: Company, step: Advance, phase: str, key: str
    ) -> tuple[Judgement, str, Mode] | Deferred | None:
        finder = self.providers.finders[name]
        try:
            await self.spend(finder.cost_per_call)
        except BudgetExhausted as exc:
            step.attempts.append(
                Attempt(name, finder.mode, phase, "budget_exhausted", detail=str(exc))
            )
            return Deferred(exc.resets_at, f"budget: {exc}")
        try:
            lookup = await finder.find(query, idempotency_key=f"{key}-slot{step.slot.id}-{name}")
        except ProviderError as exc:
            return self._failed(name, finder.mode, phase, step, exc)
        verdict = judge(lookup.candidates, self.settings.confidence_threshold, company.country)
        step.tried.append(name)
        step.attempts.append(
            Attempt(
                name,
                lookup.mode,
                phase,
                verdict.status,
                verdict.confidence,
                lookup.cost,
                lookup.latency_ms,
                detail=verdict.detail,
            )
        )
        return verdict, name, lookup.mode

    async def _start_run(
        self, name: str, query: ContactQuery, slot: Slot, step: Advance, key: str
    ) -> Awaiting | Deferred | None:
        starter = self.providers.apify
        try:
            await self.spend(starter.cost_per_call)
        except BudgetExhausted as exc:
            step.attempts.append(
                Attempt(name, starter.mode, "async", "budget_exhausted", detail=str(exc))
            )
            return Deferred(exc.resets_at, f"budget: {exc}")
        try:
            run = await starter.start_run(
                query,
                slot_ids=(slot.id,),
                webhook_url=f"{self.settings.public_url.rstrip('/')}/webhooks/apify",
                idempotency_key=f"{key}-slot{slot.id}-{name}",
            )
        except ProviderError as exc:
            return self._failed(name, starter.mode, "async", step, exc)
        step.tried.append(name)
        step.attempts.append(
            Attempt(name, run.mode, "async", "started", None, run.cost, run.latency_ms, run.run_id)
        )
        deadline = self.now() + dt.timedelta(seconds=self.settings.apify_timeout)
        return Awaiting(name, run.run_id, deadline)

    def _failed(
        self, name: str, mode: str, phase: str, step: Advance, exc: ProviderError
    ) -> Deferred | None:
        """A provider error: a rejection (bad key, bad request) counts as tried at once; a
        passing failure is retried later, until it has failed max_provider_failures times."""
        status = "rate_limited" if isinstance(exc, ProviderRateLimited) else "error"
        step.attempts.append(Attempt(name, mode, phase, status, cost=exc.cost, detail=str(exc)))
        failures = step.failures[name] = step.failures.get(name, 0) + 1
        if isinstance(exc, ProviderRejected) or failures >= self.settings.max_provider_failures:
            step.tried.append(name)
            return None
        wait = (
            exc.retry_after
            if isinstance(exc, ProviderRateLimited)
            else self.settings.provider_retry_seconds
        )
        return Deferred(self.now() + dt.timedelta(seconds=wait), f"{name}: {exc}")


def _filled(candidate: Candidate, provider: str, mode: Mode) -> Filled:
    assert candidate.email is not None
    return Filled(candidate, email_type(candidate.email), provider, mode)


def _unfilled_reason(attempts: list[Attempt]) -> str:
    answers = [
        f"{a.provider} {a.status}" + (f" ({a.detail})" if a.detail else "")
        for a in attempts
        if a.status != "started"
    ]
    return "no provider found a usable contact: " + ("; ".join(answers) or "no provider left")
