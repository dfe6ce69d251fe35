"""The enrichment waterfall's choices (seed 004 §9), with in-memory providers: the parallel
phase, the fallback order, the threshold, the region rule, passing failures, budgets, the
asynchronous hand-off and the terminal state."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from cascade.budgets import BudgetExhausted
from cascade.enrichment.settings import EnrichmentSettings
from cascade.enrichment.waterfall import (
    Awaiting,
    Company,
    Deferred,
    Filled,
    Moved,
    Slot,
    SlotState,
    Unfilled,
    Waterfall,
    judge,
)
from providers import ProviderSet
from providers.base import (
    Candidate,
    ContactQuery,
    EmailCheck,
    Lookup,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    StartedRun,
)

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
ACME = Company(1, "Acme Logistics", "acme.de", "DE")
US_ACME = Company(2, "Acme Inc", "acme.com", "US")


def person(email: str | None, confidence: float, country: str | None = None) -> Candidate:
    return Candidate("Anna Berg", "Anna", "Berg", "CEO", email, None, country, confidence)


@dataclass
class Finder:
    name: str
    answers: list[object]
    cost_per_call: Decimal = Decimal(0)
    mode: str = "sandbox"
    calls: list[ContactQuery] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def find(self, query: ContactQuery, *, idempotency_key: str) -> Lookup:
        self.calls.append(query)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        answer = self.answers.pop(0) if self.answers else ()
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, tuple)
        cost = self.cost_per_call if answer else Decimal(0)  # like PDL, a "no match" is free
        return Lookup(self.name, "sandbox", answer, cost, 10.0)


@dataclass
class Apify:
    name: str = "apify"
    mode: str = "sandbox"
    cost_per_call: Decimal = Decimal(0)
    started: list[tuple[int, ...]] = field(default_factory=list)

    async def start_run(
        self, query: ContactQuery, *, slot_ids: tuple[int, ...], webhook_url: str,
        idempotency_key: str,
    ) -> StartedRun:  # fmt: skip
        self.started.append(slot_ids)
        return StartedRun("apify", "sandbox", f"run-{len(self.started)}", Decimal(0), 5.0)


class Verifier:
    name = "millionverifier"
    mode = "sandbox"
    cost_per_call = Decimal(0)

    async def verify(self, email: str, *, idempotency_key: str) -> EmailCheck:
        raise AssertionError("the waterfall never verifies")


def waterfall(
    pdl: Finder,
    prospeo: Finder,
    apify: Apify | None = None,
    budget_left: int = 1000,
    **settings: object,
) -> Waterfall:
    providers = ProviderSet(
        finders={"peopledatalabs": pdl, "prospeo": prospeo},  # type: ignore[dict-item]
        apify=apify or Apify(),  # type: ignore[arg-type]
        verifier=Verifier(),  # type: ignore[arg-type]
    )
    calls = {"left": budget_left}

    async def spend(amount: Decimal) -> None:
        if calls["left"] <= 0:
            raise BudgetExhausted(
                "enrichment_budget", Decimal(100), Decimal(100), NOW + dt.timedelta(days=3)
            )
        calls["left"] -= 1

    async def refund(amount: Decimal) -> None:
        refunds.append(amount)

    return Waterfall(
        EnrichmentSettings.model_validate(settings), providers, (spend, refund), ledger, lambda: NOW
    )


@dataclass
class Ledger:
    """The slots as the ledger wrote them: (slot id, what)."""

    writes: list[tuple[int, str]] = field(default_factory=list)
    moved: bool = False  # the slot changed before the hand-off

    async def hand_off(
        self, slot_id: int, expected: SlotState, tried: list[str], failures: dict[str, int],
        provider: str, placeholder: str, timeout: float,
    ) -> bool:  # fmt: skip
        self.writes.append((slot_id, f"awaiting {provider} {placeholder} for {timeout:g}s"))
        return not self.moved

    async def started(self, slot_id: int, placeholder: str, run_id: str) -> bool:
        self.writes.append((slot_id, f"run {run_id}"))
        return True

    async def take_back(
        self, slot_id: int, placeholder: str, tried: list[str], failures: dict[str, int]
    ) -> bool:
        self.writes.append((slot_id, f"open again, tried {tried}"))
        return True


ledger = Ledger()
refunds: list[Decimal] = []


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    ledger.writes.clear()
    ledger.moved = False
    refunds.clear()


def fresh_slot(**changes: object) -> Slot:
    values: dict[str, object] = {
        "id": 7, "role": "CEO", "status": "open", "providers_tried": (),
        "pending_provider": None, "pending_run_id": None, "deadline_in": None,
        "provider_failures": {},
    }  # fmt: skip
    values.update(changes)
    return Slot(**values)  # type: ignore[arg-type]


async def test_parallel_phase__asks_the_first_providers_at_once_and_takes_the_most_confident() -> (
    None
):
    pdl = Finder("peopledatalabs", [(person("anna@acme.de", 0.8),)])
    prospeo = Finder("prospeo", [(person("a.berg@acme.de", 0.95),)])

    step = await waterfall(pdl, prospeo).advance(ACME, fresh_slot(), "k")

    assert step is not None
    assert isinstance(step.outcome, Filled)
    assert step.outcome.provider == "prospeo"
    assert step.outcome.candidate.email == "a.berg@acme.de"
    assert [a.phase for a in step.attempts] == ["parallel", "parallel"]
    assert step.tried == ["peopledatalabs", "prospeo"]


async def test_fallback__below_threshold_everywhere_moves_on_in_order_then_to_apify() -> None:
    pdl = Finder("peopledatalabs", [(person("anna@acme.de", 0.5),)])
    apify = Apify()

    step = await waterfall(pdl, Finder("prospeo", [()]), apify, fanout=1).advance(
        ACME, fresh_slot(), "k"
    )

    assert step is not None
    assert [(a.provider, a.phase, a.status) for a in step.attempts] == [
        ("peopledatalabs", "parallel", "below_threshold"),
        ("prospeo", "fallback", "not_found"),
        ("apify", "async", "started"),
    ]
    assert step.outcome == Awaiting("apify", "run-1")
    assert apify.started == [(7,)]
    # Marked waiting before the run started, so an early webhook finds it.
    assert ledger.writes == [(7, "awaiting apify pending:k-slot7-apify for 900s"), (7, "run run-1")]


async def test_threshold__is_configurable() -> None:
    pdl = Finder("peopledatalabs", [(person("anna@acme.de", 0.5),)])

    step = await waterfall(pdl, Finder("prospeo", [()]), confidence_threshold=0.4).advance(
        ACME, fresh_slot(), "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Filled)


@pytest.mark.parametrize(
    ("company", "expected"), [(ACME, "filtered"), (US_ACME, "found")], ids=["DE", "US"]
)
async def test_region_rule__personal_email_only_outside_europe_uk_canada_australia(
    company: Company, expected: str
) -> None:
    pdl = Finder("peopledatalabs", [(person("anna.berg@gmail.com", 0.9),)])

    step = await waterfall(
        pdl, Finder("prospeo", [()]), fanout=1, providers=("peopledatalabs",)
    ).advance(company, fresh_slot(), "k")

    assert step is not None
    assert step.attempts[0].status == expected


def test_judge__prefers_a_usable_candidate_over_a_more_confident_filtered_one() -> None:
    verdict = judge(
        (person("anna@gmail.com", 0.99, "GB"), person("anna@acme.co.uk", 0.8)), 0.7, "GB"
    )

    assert verdict.accepted is not None
    assert verdict.accepted.email == "anna@acme.co.uk"


async def test_passing_failure__defers_the_slot_without_counting_the_provider_as_tried() -> None:
    pdl = Finder("peopledatalabs", [ProviderUnavailable("peopledatalabs", "HTTP 503")])
    prospeo = Finder("prospeo", [()])

    step = await waterfall(pdl, prospeo, providers=("peopledatalabs", "prospeo")).advance(
        ACME, fresh_slot(), "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Deferred)
    assert step.outcome.retry_at == NOW + dt.timedelta(seconds=60)
    assert step.tried == ["prospeo"]
    assert step.failures == {"peopledatalabs": 1}


async def test_rate_limit__defers_until_retry_after() -> None:
    pdl = Finder("peopledatalabs", [ProviderRateLimited("peopledatalabs", 120)])

    step = await waterfall(pdl, Finder("prospeo", [()]), providers=("peopledatalabs",)).advance(
        ACME, fresh_slot(), "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Deferred)
    assert step.outcome.retry_at == NOW + dt.timedelta(seconds=120)


async def test_repeated_failures__count_as_tried_so_the_slot_ends_instead_of_looping() -> None:
    pdl = Finder("peopledatalabs", [ProviderUnavailable("peopledatalabs", "HTTP 503")])
    slot = fresh_slot(provider_failures={"peopledatalabs": 2})

    step = await waterfall(pdl, Finder("prospeo", [()]), providers=("peopledatalabs",)).advance(
        ACME, slot, "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Unfilled)
    assert "peopledatalabs error" in step.outcome.reason


async def test_rejection__counts_as_tried_at_once() -> None:
    pdl = Finder("peopledatalabs", [ProviderRejected("peopledatalabs", "HTTP 401", status=401)])

    step = await waterfall(pdl, Finder("prospeo", [()]), providers=("peopledatalabs",)).advance(
        ACME, fresh_slot(), "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Unfilled)


async def test_budget__used_up_stops_asking_and_waits_for_the_next_period() -> None:
    pdl = Finder("peopledatalabs", [(person("anna@acme.de", 0.9),)])

    step = await waterfall(pdl, Finder("prospeo", []), budget_left=0).advance(
        ACME, fresh_slot(), "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Deferred)
    assert step.outcome.retry_at == NOW + dt.timedelta(days=3)
    assert pdl.calls == []
    assert {a.status for a in step.attempts} == {"budget_exhausted"}


async def test_async_run__waits_until_its_deadline() -> None:
    slot = fresh_slot(
        status="awaiting_provider", providers_tried=("peopledatalabs", "prospeo", "apify"),
        pending_provider="apify", pending_run_id="run-1",
        deadline_in=5.0,
    )  # fmt: skip

    assert (
        await waterfall(Finder("peopledatalabs", []), Finder("prospeo", [])).advance(
            ACME, slot, "k"
        )
        is None
    )


async def test_async_run__past_its_deadline_times_out_and_ends_the_slot() -> None:
    slot = fresh_slot(
        status="awaiting_provider", providers_tried=("peopledatalabs", "prospeo", "apify"),
        pending_provider="apify", pending_run_id="run-1",
        deadline_in=-1.0,
    )  # fmt: skip

    step = await waterfall(Finder("peopledatalabs", []), Finder("prospeo", [])).advance(
        ACME, slot, "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Unfilled)
    assert step.attempts[0].status == "timeout"
    assert "apify timeout" in step.outcome.reason


async def test_fanout__bounds_the_parallel_phase() -> None:
    pdl = Finder("peopledatalabs", [(person("anna@acme.de", 0.9),)])
    prospeo = Finder("prospeo", [(person("anna@acme.de", 0.9),)])

    step = await waterfall(pdl, prospeo, fanout=1).advance(ACME, fresh_slot(), "k")

    assert step is not None
    assert isinstance(step.outcome, Filled)
    assert prospeo.calls == []


async def test_async_run__a_slot_moved_before_the_hand_off_is_left_alone() -> None:
    ledger.moved = True
    apify = Apify()

    step = await waterfall(Finder("peopledatalabs", []), Finder("prospeo", []), apify).advance(
        ACME, fresh_slot(providers_tried=("peopledatalabs", "prospeo")), "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Moved)
    assert apify.started == []


async def test_async_run__that_cannot_start_gives_the_slot_back_and_defers() -> None:
    class Down(Apify):
        async def start_run(self, query: ContactQuery, **kwargs: object) -> StartedRun:
            raise ProviderUnavailable("apify", "HTTP 503")

    step = await waterfall(Finder("peopledatalabs", []), Finder("prospeo", []), Down()).advance(
        ACME, fresh_slot(providers_tried=("peopledatalabs", "prospeo")), "k"
    )

    assert step is not None
    assert isinstance(step.outcome, Deferred)
    assert ledger.writes[-1] == (7, "open again, tried ['peopledatalabs', 'prospeo']")
    assert step.expected == ("open", ("peopledatalabs", "prospeo"), None)


async def test_budget__what_a_call_did_not_cost_is_given_back() -> None:
    pdl = Finder("peopledatalabs", [()], cost_per_call=Decimal("0.10"))

    await waterfall(pdl, Finder("prospeo", [()]), providers=("peopledatalabs",)).advance(
        ACME, fresh_slot(), "k"
    )

    assert refunds == [Decimal("0.10")]  # a "no match" from Finder costs nothing here


async def test_budget__a_call_dearer_than_the_whole_budget_counts_as_tried() -> None:
    class Dear(Finder):
        pass

    pdl = Dear("peopledatalabs", [], cost_per_call=Decimal(500))

    async def never(amount: Decimal) -> None:
        raise BudgetExhausted(
            "enrichment_budget", Decimal(0), Decimal(100), NOW, requested=Decimal(500)
        )

    water = waterfall(pdl, Finder("prospeo", []), providers=("peopledatalabs",))
    water.spend = never
    step = await water.advance(ACME, fresh_slot(), "k")

    assert step is not None
    assert isinstance(step.outcome, Unfilled)
