"""Provider clients against in-process HTTP: what each parses, how each retries and fails, and
that sandbox mode answers in each provider's own format through the same client code."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers import open_providers
from providers.apify import Apify
from providers.base import (
    ContactFinder,
    ContactQuery,
    EmailVerifier,
    ProviderFault,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    Role,
    RunStarter,
    StartedRun,
)
from providers.http import Channel, CookielessClient, RetryPolicy, retry_after_seconds
from providers.millionverifier import MillionVerifier
from providers.peopledatalabs import PeopleDataLabs
from providers.prospeo import Prospeo
from providers.sandbox import (
    FIRST_NAMES,
    LAST_NAMES,
    PERSONAL_DOMAINS,
    SANDBOX_KEY,
    ApifySandbox,
    SandboxSettings,
)
from tests.support.fake_api import Answer, FakeApi
from tests.support.waiting import eventually

QUERY = ContactQuery(company_name="Acme", domain="acme.com", role="CEO", country="Germany")
KEY = "idem-42"
SESSION_COOKIE = {"Set-Cookie": "session=abc123; Path=/"}
APIFY_TOKEN = "apify-token"  # noqa: S105 (test data)
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class Sleeps:
    """Stands in for asyncio.sleep in the retry policy: records each wait, waits for none."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Server:
    """A scripted provider: answers in order (the last one repeats), keeping every request."""

    answers: list[httpx.Response | Exception]
    requests: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


@contextlib.asynccontextmanager
async def channel(
    handler: Handler, *, max_retries: int = 3, max_retry_wait: float = 30.0
) -> AsyncIterator[tuple[Channel, Sleeps]]:
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=max_retries, max_retry_wait=max_retry_wait, sleep=sleeps)
    async with CookielessClient(transport=httpx.MockTransport(handler)) as client:
        yield Channel("test", client, policy), sleeps


# --- One case per client: how to build it, call it, and what a good answer looks like -----------

PDL_ANSWER: dict[str, Any] = {
    "status": 200,
    "total": 3,
    "data": [
        {
            "full_name": "Dana Wu",
            "first_name": "Dana",
            "last_name": "Wu",
            "job_title": "Co-Founder",
            "work_email": None,
            "emails": [{"address": "dana.wu@gmail.com", "type": "personal"}],
            "linkedin_url": None,
            "location_country": None,
        },
        {
            "full_name": "Sean Thorne",
            "first_name": "Sean",
            "last_name": "Thorne",
            "job_title": "Chief Executive Officer",
            "work_email": "sean.thorne@acme.com",
            "emails": [{"address": "sean.thorne@acme.com", "type": "current_professional"}],
            "linkedin_url": "linkedin.com/in/seanthorne",
            "location_country": "Germany",
        },
        {
            "full_name": "Kim Lee",
            "job_title": "CEO",
            "work_email": True,  # PDL's free tier: "we have one", not the address
            "emails": [{"address": "kim@lee-ventures.com", "type": "professional"}],
            "likelihood": 7,
        },
    ],
}
PROSPEO_ANSWER: dict[str, Any] = {
    "error": False,
    "response": {
        "meta": {"total_emails": 5},
        "email_list": [
            {
                "email": "maria.rossi@acme.com",
                "verification": {"status": "CATCH_ALL"},
                "first_name": "Maria",
                "last_name": "Rossi",
                "full_name": "Maria Rossi",
                "position": "Managing Director",
                "linkedin": "https://www.linkedin.com/in/maria-rossi",
            },
            {
                "email": "jo.park@acme.com",
                "verification": {"status": "VALID"},
                "full_name": "Jo Park",
                "position": "CEO & Founder",
            },
            {
                "email": "lu.chen@acme.com",
                "verification": {"status": "VALID"},
                "full_name": "Lu Chen",
                "position": "Head of Sales",
            },
            {
                "email": "old.boss@acme.com",
                "verification": {"status": "INVALID"},
                "full_name": "Old Boss",
                "position": "CEO",
            },
            {"email": "info@acme.com", "email_type": "generic", "position": None},
        ],
    },
}
APIFY_ANSWER: dict[str, Any] = {"data": {"id": "HG7ML7M8z78YcAPEB", "status": "READY"}}


def mv_answer(result: str, quality: str = "good", error: str = "") -> dict[str, Any]:
    codes = {"ok": 1, "catch_all": 2, "unknown": 3, "error": 4, "disposable": 5, "invalid": 6}
    return {
        "email": "sean.thorne@acme.com",
        "quality": quality,
        "result": result,
        "resultcode": codes[result],
        "subresult": result,
        "free": False,
        "role": False,
        "credits": 999,
        "error": error,
        "livemode": True,
    }


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Channel], Awaitable[object]]
    answer: dict[str, Any]
    status: int = 200

    def ok(self) -> httpx.Response:
        return httpx.Response(self.status, json=self.answer)


async def find_with_pdl(channel: Channel) -> object:
    return await PeopleDataLabs(channel, api_key="pdl-key").find(QUERY, idempotency_key=KEY)


async def find_with_prospeo(channel: Channel) -> object:
    return await Prospeo(channel, api_key="prospeo-key").find(QUERY, idempotency_key=KEY)


async def start_apify_run(channel: Channel) -> StartedRun:
    client = Apify(channel, api_key=APIFY_TOKEN, actor_id="acme/finder")
    return await client.start_run(
        QUERY,
        slot_ids=(7, 8),
        webhook_url="https://cascade.test/webhooks/apify",
        idempotency_key=KEY,
    )


async def verify_with_millionverifier(channel: Channel) -> object:
    client = MillionVerifier(channel, api_key="mv-key")
    return await client.verify("sean.thorne@acme.com", idempotency_key=KEY)


CASES = [
    Case("peopledatalabs", find_with_pdl, PDL_ANSWER),
    Case("prospeo", find_with_prospeo, PROSPEO_ANSWER),
    Case("apify", start_apify_run, APIFY_ANSWER, status=201),
    Case("millionverifier", verify_with_millionverifier, mv_answer("ok")),
]
every_client = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


# --- The shared HTTP discipline, for every client ----------------------------------------------


@every_client
async def test_client__sends_the_idempotency_key(case: Case) -> None:
    server = Server([case.ok()])
    async with channel(server) as (chan, _):
        await case.call(chan)

    assert server.requests[0].headers["Idempotency-Key"] == KEY


@every_client
async def test_client__never_sends_back_a_cookie_the_provider_set(case: Case) -> None:
    with_cookie = httpx.Response(case.status, json=case.answer, headers=SESSION_COOKIE)
    server = Server([with_cookie, case.ok()])
    async with channel(server) as (chan, _):
        await case.call(chan)
        await case.call(chan)

    assert [request.headers.get("Cookie") for request in server.requests] == [None, None]


@every_client
async def test_client__waits_out_a_429_retry_after_then_succeeds(case: Case) -> None:
    server = Server([httpx.Response(429, headers={"Retry-After": "2"}), case.ok()])
    async with channel(server) as (chan, sleeps):
        await case.call(chan)

    assert len(server.requests) == 2
    assert sleeps.waits == [2.0]


@every_client
async def test_client__raises_rate_limited_at_once_when_retry_after_exceeds_the_cap(
    case: Case,
) -> None:
    server = Server([httpx.Response(429, headers={"Retry-After": "3600"}), case.ok()])
    async with channel(server, max_retry_wait=30) as (chan, sleeps):
        with pytest.raises(ProviderRateLimited) as limited:
            await case.call(chan)

    assert limited.value.retry_after == 3600
    assert (len(server.requests), sleeps.waits) == (1, [])


@every_client
async def test_client__raises_rate_limited_when_429s_outlast_the_retries(case: Case) -> None:
    server = Server([httpx.Response(429, headers={"Retry-After": "1"})])
    async with channel(server, max_retries=2) as (chan, sleeps):
        with pytest.raises(ProviderRateLimited) as limited:
            await case.call(chan)

    assert limited.value.retry_after == 1
    assert (len(server.requests), sleeps.waits) == (3, [1.0, 1.0])


@every_client
async def test_client__retries_a_500_with_backoff_then_succeeds(case: Case) -> None:
    server = Server([httpx.Response(500, text="oops"), case.ok()])
    async with channel(server) as (chan, sleeps):
        await case.call(chan)

    assert len(server.requests) == 2
    assert len(sleeps.waits) == 1
    assert 0 <= sleeps.waits[0] <= RetryPolicy().backoff_base


@every_client
async def test_client__a_500_every_time_is_unavailable_after_the_retries(case: Case) -> None:
    server = Server([httpx.Response(503, text="down for maintenance")])
    async with channel(server, max_retries=3) as (chan, _):
        with pytest.raises(ProviderUnavailable, match="HTTP 503: down for maintenance"):
            await case.call(chan)

    assert len(server.requests) == 4


@every_client
async def test_client__a_timeout_is_retried_then_unavailable(case: Case) -> None:
    server = Server([httpx.ReadTimeout("read timed out")])
    async with channel(server, max_retries=2) as (chan, sleeps):
        with pytest.raises(ProviderUnavailable, match="ReadTimeout"):
            await case.call(chan)

    assert (len(server.requests), len(sleeps.waits)) == (3, 2)


@every_client
async def test_client__a_connection_error_then_an_answer_succeeds(case: Case) -> None:
    server = Server([httpx.ConnectError("refused"), case.ok()])
    async with channel(server) as (chan, _):
        await case.call(chan)

    assert len(server.requests) == 2


@every_client
async def test_client__malformed_json_is_unavailable(case: Case) -> None:
    server = Server([httpx.Response(case.status, text='{"data": [')])
    async with channel(server) as (chan, _):
        with pytest.raises(ProviderUnavailable, match="malformed JSON"):
            await case.call(chan)

    assert len(server.requests) == 1


@every_client
async def test_client__json_of_the_wrong_shape_is_unavailable(case: Case) -> None:
    server = Server([httpx.Response(case.status, json={"something": "else"})])
    async with channel(server) as (chan, _):
        with pytest.raises(ProviderUnavailable, match="unexpected JSON shape"):
            await case.call(chan)


@every_client
@pytest.mark.parametrize("status", [400, 401, 403])
async def test_client__a_client_error_is_rejected_without_retry(case: Case, status: int) -> None:
    server = Server([httpx.Response(status, text="Forbidden: check your key")])
    async with channel(server) as (chan, sleeps):
        with pytest.raises(ProviderRejected, match="check your key") as rejected:
            await case.call(chan)

    assert rejected.value.status == status
    assert (len(server.requests), sleeps.waits) == (1, [])


async def test_channel__a_long_error_body_is_cut_to_an_excerpt() -> None:
    server = Server([httpx.Response(400, text="x" * 5000)])
    async with channel(server) as (chan, _):
        with pytest.raises(ProviderRejected) as rejected:
            await chan.send(httpx.Request("GET", "https://provider.test/"))

    assert len(str(rejected.value)) < 300


async def test_channel__holds_at_most_its_limit_of_calls_in_flight() -> None:
    in_flight, most = 0, 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        chan = Channel("test", client, limit=asyncio.Semaphore(2))
        await asyncio.gather(
            *(chan.send(httpx.Request("GET", "https://provider.test/")) for _ in range(6))
        )

    assert most == 2


def test_retry_after_seconds__reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 6, 12, 0, 0, tzinfo=UTC)

    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Mon, 06 Jan 2025 12:01:30 GMT", now=now) == 90.0
    assert retry_after_seconds("Mon, 06 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


async def test_client__a_429_with_an_http_date_waits_until_then() -> None:
    later = datetime.now(UTC).timestamp() + 3600
    date = datetime.fromtimestamp(later, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    server = Server([httpx.Response(429, headers={"Retry-After": date})])
    async with channel(server, max_retry_wait=30) as (chan, _):
        with pytest.raises(ProviderRateLimited) as limited:
            await find_with_pdl(chan)

    assert 3500 < limited.value.retry_after <= 3600


# --- PeopleDataLabs -------------------------------------------------------------------------------


async def test_peopledatalabs__maps_hits_to_candidates_best_first() -> None:
    server = Server([httpx.Response(200, json=PDL_ANSWER)])
    async with channel(server) as (chan, _):
        lookup = await PeopleDataLabs(chan, api_key="pdl-key", cost_per_call=Decimal("0.28")).find(
            QUERY, idempotency_key=KEY
        )

    assert (lookup.provider, lookup.mode, lookup.cost) == (
        "peopledatalabs",
        "live",
        Decimal("0.28"),
    )
    assert lookup.latency_ms > 0
    sean, kim, dana = lookup.candidates
    assert (sean.full_name, sean.first_name, sean.last_name) == ("Sean Thorne", "Sean", "Thorne")
    assert (sean.title, sean.email) == ("Chief Executive Officer", "sean.thorne@acme.com")
    assert (sean.linkedin_url, sean.country) == ("https://linkedin.com/in/seanthorne", "Germany")
    # Title names the role, email at the domain, a LinkedIn profile: 0.4 + 0.3 + 0.2 + 0.05.
    assert sean.confidence == 0.95
    # PDL's likelihood (7 of 10) when it gives one; the `true` flag is not an address.
    assert (kim.confidence, kim.email) == (0.7, "kim@lee-ventures.com")
    # A title that is not the role's, and only a personal address: 0.4.
    assert (dana.email, dana.confidence, dana.country) == ("dana.wu@gmail.com", 0.4, "Germany")


async def test_peopledatalabs__asks_for_the_company_domain_and_the_role() -> None:
    server = Server([httpx.Response(200, json=PDL_ANSWER)])
    async with channel(server) as (chan, _):
        await PeopleDataLabs(chan, api_key="pdl-key", base_url="https://pdl.test/").find(
            ContactQuery("Acme", "Acme.com", "CFO"), idempotency_key=KEY
        )

    request = server.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://pdl.test/v5/person/search")
    assert request.headers["X-Api-Key"] == "pdl-key"
    body = json.loads(request.content)
    must = body["query"]["bool"]["must"]
    assert {"term": {"job_company_website": "acme.com"}} in must
    assert {"term": {"job_title_levels": "cxo"}} in must
    assert {"match_phrase": {"job_title": "chief financial officer"}} in must[-1]["bool"]["should"]
    assert body["size"] == 3


async def test_peopledatalabs__a_404_is_no_match_and_costs_nothing() -> None:
    not_found = {"status": 404, "error": {"type": "not_found", "message": "No records"}}
    server = Server([httpx.Response(404, json=not_found)])
    async with channel(server) as (chan, _):
        lookup = await PeopleDataLabs(chan, api_key="k").find(QUERY, idempotency_key=KEY)

    assert (lookup.candidates, lookup.cost, len(server.requests)) == ((), Decimal(0), 1)


# --- Prospeo --------------------------------------------------------------------------------------


async def test_prospeo__keeps_the_role_and_scores_by_verification_status() -> None:
    server = Server([httpx.Response(200, json=PROSPEO_ANSWER)])
    async with channel(server) as (chan, _):
        lookup = await Prospeo(chan, api_key="prospeo-key").find(QUERY, idempotency_key=KEY)

    assert [(c.full_name, c.confidence) for c in lookup.candidates] == [
        ("Jo Park", 0.9),  # VALID
        ("Maria Rossi", 0.6),  # CATCH_ALL; the INVALID CEO and the Head of Sales are dropped
    ]
    maria = lookup.candidates[1]
    assert (maria.first_name, maria.email, maria.country) == (
        "Maria",
        "maria.rossi@acme.com",
        "Germany",
    )
    assert maria.linkedin_url == "https://www.linkedin.com/in/maria-rossi"
    request = server.requests[0]
    assert str(request.url) == "https://api.prospeo.io/domain-search"
    assert request.headers["X-KEY"] == "prospeo-key"
    assert json.loads(request.content)["company"] == "acme.com"


async def test_prospeo__no_result_is_an_empty_lookup() -> None:
    server = Server([httpx.Response(400, json={"error": True, "message": "NO_RESULT"})])
    async with channel(server) as (chan, _):
        lookup = await Prospeo(chan, api_key="k").find(QUERY, idempotency_key=KEY)

    assert (lookup.candidates, lookup.cost) == ((), Decimal(0))


async def test_prospeo__an_invalid_key_is_rejected() -> None:
    server = Server([httpx.Response(401, json={"error": True, "message": "INVALID_API_KEY"})])
    async with channel(server) as (chan, _):
        with pytest.raises(ProviderRejected, match="INVALID_API_KEY"):
            await Prospeo(chan, api_key="k").find(QUERY, idempotency_key=KEY)

    assert len(server.requests) == 1


async def test_prospeo__insufficient_credits_is_a_fault() -> None:
    body = {"error": True, "message": "INSUFFICIENT_CREDITS"}
    server = Server([httpx.Response(400, json=body)])
    async with channel(server) as (chan, _):
        with pytest.raises(ProviderFault, match="INSUFFICIENT_CREDITS"):
            await Prospeo(chan, api_key="k").find(QUERY, idempotency_key=KEY)


async def test_prospeo__a_companys_slots_asked_at_once_share_one_search() -> None:
    server = Server([httpx.Response(200, json=PROSPEO_ANSWER)])
    async with channel(server) as (chan, _):
        prospeo = Prospeo(chan, api_key="k", cost_per_call=Decimal("0.04"))
        lookups = await asyncio.gather(
            *(
                prospeo.find(dataclasses.replace(QUERY, role=role), idempotency_key=f"k-{role}")
                for role in ("CEO", "HR", "CEO")
            )
        )

    assert len(server.requests) == 1
    assert server.requests[0].headers["Idempotency-Key"] == "k-CEO"  # the first caller's
    assert [lookup.cost for lookup in lookups] == [Decimal("0.04"), Decimal(0), Decimal(0)]
    assert [c.full_name for c in lookups[0].candidates] == ["Jo Park", "Maria Rossi"]
    assert lookups[2].candidates == lookups[0].candidates


async def test_prospeo__callers_that_joined_a_failed_search_fail_with_it() -> None:
    body = {"error": True, "message": "INSUFFICIENT_CREDITS"}
    server = Server([httpx.Response(400, json=body)])
    async with channel(server) as (chan, _):
        prospeo = Prospeo(chan, api_key="k")
        outcomes = await asyncio.gather(
            *(prospeo.find(QUERY, idempotency_key=KEY) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(outcome, ProviderFault) for outcome in outcomes)
        # Once it is over, the next question asks again.
        with pytest.raises(ProviderFault):
            await prospeo.find(QUERY, idempotency_key=KEY)

    assert len(server.requests) == 2


async def test_prospeo__a_search_whose_callers_all_left_is_cancelled_not_left_running() -> None:
    answered = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        try:
            await answered.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return httpx.Response(200, json=PROSPEO_ANSWER)

    async with channel(slow) as (chan, _):
        prospeo = Prospeo(chan, api_key="k")
        first = asyncio.create_task(prospeo.find(QUERY, idempotency_key="k-1"))
        second = asyncio.create_task(prospeo.find(QUERY, idempotency_key="k-2"))
        await eventually(lambda: asyncio.sleep(0, bool(prospeo._searching)))
        first.cancel()  # one caller leaves: the other still waits for the answer
        with pytest.raises(asyncio.CancelledError):
            await first
        assert not cancelled.is_set()
        answered.set()
        lookup = await second
        assert [c.full_name for c in lookup.candidates] == ["Jo Park", "Maria Rossi"]

        answered.clear()
        alone = asyncio.create_task(prospeo.find(QUERY, idempotency_key="k-3"))
        await eventually(lambda: asyncio.sleep(0, bool(prospeo._searching)))
        alone.cancel()  # the last caller leaves: the request goes with it
        with pytest.raises(asyncio.CancelledError):
            await alone
        await eventually(lambda: asyncio.sleep(0, cancelled.is_set()))


# --- Apify ----------------------------------------------------------------------------------------


async def test_apify__starts_a_run_with_the_input_and_a_failure_webhook() -> None:
    server = Server([httpx.Response(201, json=APIFY_ANSWER)])
    async with channel(server) as (chan, _):
        run = await start_apify_run(chan)

    assert (run.provider, run.mode, run.run_id) == ("apify", "live", "HG7ML7M8z78YcAPEB")
    request = server.requests[0]
    assert request.url.path == "/v2/acts/acme~finder/runs"
    assert request.headers["Authorization"] == "Bearer apify-token"
    run_input = json.loads(request.content)
    assert run_input["domain"] == "acme.com"
    assert (run_input["roles"], run_input["slot_ids"]) == (["CEO"], [7, 8])
    assert run_input["callback_url"] == "https://cascade.test/webhooks/apify"
    (webhook,) = json.loads(base64.b64decode(request.url.params["webhooks"]))
    assert webhook["requestUrl"] == "https://cascade.test/webhooks/apify"
    assert {"ACTOR.RUN.FAILED", "ACTOR.RUN.TIMED_OUT"} <= set(webhook["eventTypes"])
    assert webhook["payloadTemplate"].startswith('{"event": "scrape_failed"')
    assert '"slot_ids": [7, 8]' in webhook["payloadTemplate"]


# --- MillionVerifier ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "quality", "score"),
    [
        ("ok", "good", 0.95),
        ("ok", "risky", 0.75),
        ("catch_all", "risky", 0.5),
        ("unknown", "risky", 0.3),
        ("invalid", "bad", 0.0),
        ("disposable", "bad", 0.05),
    ],
)
async def test_millionverifier__each_result_is_a_verdict_with_a_derived_score(
    result: str, quality: str, score: float
) -> None:
    server = Server([httpx.Response(200, json=mv_answer(result, quality))])
    async with channel(server) as (chan, _):
        check = await MillionVerifier(
            chan, api_key="mv-key", cost_per_call=Decimal("0.004")
        ).verify("sean.thorne@acme.com", idempotency_key=KEY)

    assert (check.result, check.quality, check.score) == (result, quality, score)
    assert (check.email, check.cost, check.raw["credits"]) == (
        "sean.thorne@acme.com",
        Decimal("0.004"),
        999,
    )
    params = server.requests[0].url.params
    assert (params["api"], params["email"], params["timeout"]) == (
        "mv-key",
        "sean.thorne@acme.com",
        "10",
    )


async def test_millionverifier__result_error_is_a_fault_never_a_verdict() -> None:
    answer = mv_answer("error", quality="", error="Insufficient credits")
    server = Server([httpx.Response(200, json=answer)])
    async with channel(server) as (chan, _):
        with pytest.raises(ProviderFault, match="Insufficient credits"):
            await verify_with_millionverifier(chan)

    assert len(server.requests) == 1


async def test_millionverifier__an_unknown_result_is_unavailable() -> None:
    server = Server([httpx.Response(200, json={**mv_answer("ok"), "result": "maybe"})])
    async with channel(server) as (chan, _):
        with pytest.raises(ProviderUnavailable, match="unexpected result 'maybe'"):
            await verify_with_millionverifier(chan)


# --- Sandbox mode ---------------------------------------------------------------------------------

DOMAINS = [f"sandbox-co-{n}.com" for n in range(60)]
ROLES: tuple[Role, ...] = ("CEO", "CFO", "HR")


async def test_sandbox__every_client_says_it_is_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="providers.sandbox"):
        async with open_providers({}) as providers:
            clients: list[ContactFinder | RunStarter | EmailVerifier] = [
                *providers.finders.values(),
                providers.apify,
                providers.verifier,
            ]
            assert {c.mode for c in clients} == {"sandbox"}
            assert {c.cost_per_call for c in clients} == {Decimal(0)}

    assert (
        "PeopleDataLabs: PEOPLEDATALABS_API_KEY is not set: sandbox mode, results are invented"
        in caplog.messages
    )
    for variable in ("PROSPEO_API_KEY", "APIFY_TOKEN", "MILLIONVERIFIER_API_KEY"):
        assert any(variable in message for message in caplog.messages)


async def test_open_providers__a_set_key_makes_a_live_client() -> None:
    environ = {"PEOPLEDATALABS_API_KEY": "k", "MILLIONVERIFIER_API_KEY": "k"}
    async with open_providers(environ) as providers:
        assert providers.finders["peopledatalabs"].mode == "live"
        assert providers.finders["prospeo"].mode == "sandbox"
        assert providers.verifier.mode == "live"
        assert providers.verifier.cost_per_call > 0


async def test_open_providers__a_live_client_never_sends_back_a_cookie() -> None:
    with FakeApi(default=Answer(200, mv_answer("ok"))) as api:
        api.queue(Answer(200, mv_answer("ok"), SESSION_COOKIE))
        environ = {"MILLIONVERIFIER_API_KEY": "k", "MILLIONVERIFIER_BASE_URL": api.url}
        async with open_providers(environ) as providers:
            for key in ("first", "second"):
                await providers.verifier.verify("sean.thorne@acme.com", idempotency_key=key)

    assert [request.headers.get("Cookie") for request in api.requests] == [None, None]


async def test_sandbox__the_same_question_gets_the_same_answer() -> None:
    async with open_providers({}) as first, open_providers({}) as second:
        for name in ("peopledatalabs", "prospeo"):
            for domain in DOMAINS[:10]:
                query = ContactQuery("Co", domain, "CFO", "France")
                one = await first.finders[name].find(query, idempotency_key="a")
                other = await second.finders[name].find(query, idempotency_key="b")
                assert one.candidates == other.candidates
                assert one.mode == "sandbox"


async def test_sandbox__finders_invent_realistic_people_and_together_cover_most_slots() -> None:
    answers: dict[tuple[str, Role], list[Any]] = {}
    async with open_providers({}) as providers:
        for domain in DOMAINS:
            for role in ROLES:
                query = ContactQuery("Co", domain, role, "Germany")
                answers[domain, role] = [
                    (await finder.find(query, idempotency_key="k")).candidates
                    for finder in providers.finders.values()
                ]

    pdl_found = sum(bool(pdl) for pdl, _ in answers.values()) / len(answers)
    prospeo_found = sum(bool(prospeo) for _, prospeo in answers.values()) / len(answers)
    either = sum(bool(pdl or prospeo) for pdl, prospeo in answers.values()) / len(answers)
    assert 0.65 < pdl_found < 0.95
    assert 0.5 < prospeo_found < 0.85
    assert either > 0.85
    people = [c for found in answers.values() for candidates in found for c in candidates]
    for person in people:
        assert (person.first_name in FIRST_NAMES, person.last_name in LAST_NAMES) == (True, True)
        assert person.email is not None
        assert person.email.startswith(f"{person.first_name}.{person.last_name}".lower())
        assert (person.country or "").lower() == "germany"
    domains = [p.email.rsplit("@", 1)[1] for p in people if p.email]
    personal = sum(domain in PERSONAL_DOMAINS for domain in domains) / len(domains)
    assert 0.02 < personal < 0.25
    assert any(p.confidence < 0.7 for p in people)
    assert any(p.confidence >= 0.9 for p in people)


async def test_sandbox__millionverifier_spreads_verdicts_by_address() -> None:
    async with open_providers({}) as providers:
        checks = [
            await providers.verifier.verify(f"person{n}@acme.com", idempotency_key="k")
            for n in range(300)
        ]
        again = await providers.verifier.verify("person0@acme.com", idempotency_key="k")

    results = [check.result for check in checks]
    assert 0.75 < results.count("ok") / len(results) < 0.95
    assert {"catch_all", "unknown", "invalid", "disposable"} <= set(results)
    assert (again.result, again.score) == (checks[0].result, checks[0].score)
    assert {check.mode for check in checks} == {"sandbox"}


async def test_sandbox__an_apify_run_posts_scrape_done_to_the_callback() -> None:
    delivered: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def callback(request: httpx.Request) -> httpx.Response:
        await delivered.put(json.loads(request.content))
        return httpx.Response(202)

    transport = ApifySandbox(
        SandboxSettings(apify_delay_ms=0), callback_transport=httpx.MockTransport(callback)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        apify = Apify(Channel("apify", client), api_key=SANDBOX_KEY, mode="sandbox")
        run = await apify.start_run(
            QUERY, slot_ids=(11, 12), webhook_url="http://cascade.test/webhooks/apify",
            idempotency_key=KEY,
        )  # fmt: skip
        body = await asyncio.wait_for(delivered.get(), timeout=5)

    assert (run.mode, len(run.run_id)) == ("sandbox", 17)
    assert body["event"] == "scrape_done"
    payload = body["payload"]
    assert (payload["run_id"], payload["slot_ids"]) == (run.run_id, [11, 12])
    assert payload["unique_id"] == "04.01.01.04.20000.004"
    for contact in payload["contacts"]:
        assert contact["slot_id"] in (11, 12)
        assert contact["email"].endswith("@acme.com")
        assert set(contact) == {
            "slot_id", "full_name", "first_name", "last_name", "title", "email",
            "linkedin_url", "country", "confidence",
        }  # fmt: skip


async def test_sandbox__a_failed_apify_delivery_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    transport = ApifySandbox(
        SandboxSettings(apify_delay_ms=0), callback_transport=httpx.MockTransport(refuse)
    )
    with caplog.at_level(logging.WARNING, logger="providers.sandbox"):
        async with httpx.AsyncClient(transport=transport) as client:
            apify = Apify(Channel("apify", client), api_key=SANDBOX_KEY, mode="sandbox")
            await apify.start_run(
                QUERY, slot_ids=(1,), webhook_url="http://cascade.test/x", idempotency_key=KEY
            )

            async def warned() -> bool:
                return any("could not deliver scrape_done" in m for m in caplog.messages)

            await eventually(warned, timeout=5)


async def test_sandbox__closing_the_client_cancels_pending_runs() -> None:
    posted: list[httpx.Request] = []

    async def callback(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(202)

    transport = ApifySandbox(
        SandboxSettings(apify_delay_ms=60_000), callback_transport=httpx.MockTransport(callback)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        apify = Apify(Channel("apify", client), api_key=SANDBOX_KEY, mode="sandbox")
        await apify.start_run(
            QUERY, slot_ids=(1,), webhook_url="http://cascade.test/x", idempotency_key=KEY
        )

    assert posted == []
