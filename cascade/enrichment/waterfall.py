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
from typing import Protocol

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
# Gives back what a reservation did not cost (a free "no match", a call that never arrived).
Refund = Callable[[Decimal], Awaitable[None]]

# What a slot is in the database, as the last write of this pass left it: (status,
# providers_tried, pending_run_id). The write-back applies only if the slot is still so.
SlotState = tuple[str, tuple[str, ...], str | None]


class RunLedger(Protocol):
    """The database side of handing a slot to an asynchronous provider. The slot is marked
    as waiting *before* the run starts (its own committed write), so a webhook that comes
    back at once finds it waiting and is never lost as "late"."""

    async def hand_off(
        self, slot_id: int, expected: SlotState, tried: list[str], failures: dict[str, int],
        provider: str, placeholder: str, timeout: float,
    ) -> bool:  # fmt: skip
        """Marks the slot waiting for `provider` under the placeholder run id, with its
        deadline `timeout` seconds from now; False if the slot is no longer `expected`."""

    async def started(self, slot_id: int, placeholder: str, run_id: str) -> bool:
        """Replaces the placeholder with the provider's run id (unless a webhook came first)."""

    async def take_back(
        self, slot_id: int, placeholder: str, tried: list[str], failures: dict[str, int]
    ) -> bool:
        """The run could not start: the slot is open again (unless a webhook came first)."""


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
    # Seconds until the pending run's deadline, by the database's clock (negative: past).
    deadline_in: float | None
    provider_failures: dict[str, int]

    @property
    def state(self) -> SlotState:
        return (self.status, self.providers_tried, self.pending_run_id)


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
    """Handed to an asynchronous provider: already written (RunLedger), nothing to save."""

    provider: str
    run_id: str


@dataclass(frozen=True, slots=True)
class Moved:
    """The slot changed while this pass worked on it (a webhook, another event): its new
    state stands and this pass writes nothing for it."""


@dataclass(frozen=True, slots=True)
class Unfilled:
    reason: str


@dataclass(frozen=True, slots=True)
class Deferred:
    retry_at: dt.datetime
    reason: str


Outcome = Filled | Awaiting | Unfilled | Deferred | Moved


@dataclass(slots=True)
class Advance:
    """What one pass did to a slot: its new position in the waterfall and what came of it."""

    slot: Slot
    outcome: Outcome
    tried: list[str]
    failures: dict[str, int]
    expected: SlotState
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
        budget: tuple[Spend, Refund],
        ledger: RunLedger,
        now: Callable[[], dt.datetime],
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.spend, self.refund = budget
        self.ledger = ledger
        self.now = now

    async def advance(self, company: Company, slot: Slot, key: str) -> Advance | None:
        """One pass over the slot; None when there is nothing to do yet (a run in flight)."""
        step = Advance(
            slot, Unfilled(""), list(slot.providers_tried), dict(slot.provider_failures), slot.state
        )
        query = ContactQuery(company.name, company.domain, slot.role, company.country)
        if slot.status == "awaiting_provider":
            pending = slot.pending_run_id or ""
            provider = slot.pending_provider or "?"
            if pending == placeholder(key, slot.id, provider):
                # This event handed the slot over and stopped before the run started (a
                # drain, a crash): start it now, under the same idempotency key.
                step.tried.remove(provider)
                launched = await self._launch(provider, query, slot, step, pending)
                if launched is not None:
                    step.outcome = launched
                    return step
            if slot.deadline_in is not None and slot.deadline_in > 0:
                return None
            if pending.startswith(PLACEHOLDER):
                # Handed over by an event that never started the run: nothing was asked of
                # the provider, so it is asked again rather than counted as tried.
                step.tried.remove(provider)
                detail = "its run was never started; asking again"
            else:
                detail = f"no webhook within {self.settings.apify_timeout:g}s"
            step.attempts.append(
                Attempt(provider, "unknown", "async", "timeout", external_id=pending, detail=detail)
            )
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
                if started is not None:
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
            return self._unaffordable(name, finder.mode, phase, step, exc)
        try:
            lookup = await finder.find(query, idempotency_key=f"{key}-slot{step.slot.id}-{name}")
        except ProviderError as exc:
            await self.refund(finder.cost_per_call - exc.cost)
            return self._failed(name, finder.mode, phase, step, exc)
        await self.refund(finder.cost_per_call - lookup.cost)
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
    ) -> Awaiting | Deferred | Moved | None:
        starter = self.providers.apify
        try:
            await self.spend(starter.cost_per_call)
        except BudgetExhausted as exc:
            return self._unaffordable(name, starter.mode, "async", step, exc)
        pending = placeholder(key, slot.id, name)
        before = list(step.tried)
        step.tried.append(name)
        if not await self.ledger.hand_off(
            slot.id, step.expected, step.tried, step.failures, name, pending,
            self.settings.apify_timeout,
        ):  # fmt: skip
            await self.refund(starter.cost_per_call)
            step.tried = before
            return Moved()
        step.tried = before
        step.expected = ("awaiting_provider", (*before, name), pending)
        return await self._launch(name, query, slot, step, pending, spent=True)

    async def _launch(
        self, name: str, query: ContactQuery, slot: Slot, step: Advance, pending: str,
        *, spent: bool = False,
    ) -> Awaiting | Deferred | None:  # fmt: skip
        """Starts the run of a slot already marked waiting under `pending`. Awaiting when it
        started; otherwise the slot is given back: Deferred for a passing failure, None when
        the provider now counts as tried (the waterfall goes on)."""
        starter = self.providers.apify
        if not spent:
            try:
                await self.spend(starter.cost_per_call)
            except BudgetExhausted as exc:
                unaffordable = self._unaffordable(name, starter.mode, "async", step, exc)
                return await self._give_back(slot, step, name, pending, unaffordable)
        try:
            run = await starter.start_run(
                query,
                slot_ids=(slot.id,),
                webhook_url=f"{self.settings.public_url.rstrip('/')}/webhooks/apify",
                idempotency_key=pending.removeprefix(PLACEHOLDER),
            )
        except ProviderError as exc:
            await self.refund(starter.cost_per_call - exc.cost)
            failed = self._failed(name, starter.mode, "async", step, exc)
            return await self._give_back(slot, step, name, pending, failed)
        step.tried.append(name)
        step.attempts.append(
            Attempt(name, run.mode, "async", "started", None, run.cost, run.latency_ms, run.run_id)
        )
        await self.ledger.started(slot.id, pending, run.run_id)
        return Awaiting(name, run.run_id)

    async def _give_back(
        self, slot: Slot, step: Advance, name: str, pending: str, deferred: Deferred | None
    ) -> Awaiting | Deferred | None:
        """The run will not start now: the slot is open again, with the provider among the
        tried only if it counts as tried (`_failed` and `_unaffordable` decided)."""
        if not await self.ledger.take_back(slot.id, pending, step.tried, step.failures):
            return Awaiting(name, pending)  # its webhook came anyway: it stands
        step.expected = ("open", tuple(step.tried), None)
        return deferred

    def _unaffordable(
        self, name: str, mode: str, phase: str, step: Advance, exc: BudgetExhausted
    ) -> Deferred | None:
        """A used-up budget waits for its next period; a call dearer than the whole budget
        can never be made, so the provider counts as tried."""
        step.attempts.append(Attempt(name, mode, phase, "budget_exhausted", detail=str(exc)))
        if exc.requested is not None and exc.requested > exc.limit:
            step.tried.append(name)
            return None
        return Deferred(exc.resets_at, f"budget: {exc}")

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


PLACEHOLDER = "pending:"


def placeholder(key: str, slot_id: int, provider: str) -> str:
    """The run id a slot waits under from its hand-off until the provider names the run: the
    handing event's idempotency key for that slot, so the same event finds its own."""
    return f"{PLACEHOLDER}{key}-slot{slot_id}-{provider}"


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
