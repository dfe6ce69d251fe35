"""PeopleDataLabs Person Search: who holds a role at a company, in one synchronous call.

`POST {base}/v5/person/search` with `X-Api-Key`, an Elasticsearch query on the company's
website (PDL normalises `job_company_website` to the bare domain) and the role's titles, a few
results, title-cased. A 404 is PDL's "no person matched": an empty Lookup, not a fault.

Confidence, in [0, 1]: PDL's `likelihood` (1-10) divided by 10 when the record carries one
(enrichment answers do, search answers usually do not). Otherwise it is built from what we can
check ourselves: 0.4 for a person PDL filed under the company, +0.3 when the title names the
role (providers/roles.py), +0.2 when the email is at the company's domain, +0.05 for a
LinkedIn profile. A personal address caps the score at 0.6, because the pipeline cannot write
to it without the region rule's say-so; no address at all caps it at 0.5.

Cost: `cost_per_call` for every answered search (PDL charges per record returned, nothing for
a 404; we budget per call, at most `size` records).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from providers.base import Candidate, ContactQuery, Lookup, Mode, Role
from providers.http import Channel, Client
from providers.roles import clamp, email_at, title_matches

NAME = "peopledatalabs"
DEFAULT_BASE_URL = "https://api.peopledatalabs.com"
DEFAULT_COST_PER_CALL = Decimal("0.10")
SEARCH_PATH = "/v5/person/search"
NO_MATCH = 404


def _value_or_none(value: object) -> object:
    # PDL's free tier answers `true`/`false` ("we have it") where paid plans give the value.
    return None if isinstance(value, bool) else value


Text = Annotated[str | None, BeforeValidator(_value_or_none)]


class _Email(BaseModel):
    model_config = ConfigDict(extra="ignore")
    address: Text = None
    type: Text = None


class _Person(BaseModel):
    model_config = ConfigDict(extra="ignore")
    full_name: Text = None
    first_name: Text = None
    last_name: Text = None
    job_title: Text = None
    work_email: Text = None
    emails: Annotated[list[_Email], BeforeValidator(lambda v: v or [])] = []
    personal_emails: Annotated[list[str], BeforeValidator(lambda v: v or [])] = []
    linkedin_url: Text = None
    location_country: Text = None
    likelihood: int | None = None


class _SearchAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: int | None = None
    data: list[_Person]
    total: int | None = None


# The role's part of the query: any of these must match. The C-level roles also require PDL's
# `cxo` level, which keeps "CEO of the Munich office" style titles of other levels out.
_ROLE_TITLES: dict[Role, tuple[str, ...]] = {
    "CEO": ("chief executive officer", "ceo", "managing director"),
    "CFO": ("chief financial officer", "cfo", "finance director"),
    "HR": ("human resources", "chief people officer", "head of people", "hr director"),
}


def search_query(query: ContactQuery) -> dict[str, Any]:
    must: list[dict[str, Any]] = [{"term": {"job_company_website": query.domain.lower()}}]
    should: list[dict[str, Any]] = [
        {"match_phrase": {"job_title": title}} for title in _ROLE_TITLES[query.role]
    ]
    if query.role == "HR":
        should.append({"term": {"job_title_role": "human_resources"}})
    else:
        must.append({"term": {"job_title_levels": "cxo"}})
    must.append({"bool": {"should": should, "minimum_should_match": 1}})
    if query.country is None:
        return {"bool": {"must": must}}
    # Ranks people in the company's country first without excluding the others: a CEO may
    # well live abroad. PDL spells countries as lower-case English names ("germany").
    return {
        "bool": {"must": must, "should": [{"term": {"location_country": query.country.lower()}}]}
    }


class PeopleDataLabs(Client):
    """A ContactFinder over PDL's Person Search API."""

    def __init__(
        self,
        channel: Channel,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        cost_per_call: Decimal = DEFAULT_COST_PER_CALL,
        mode: Mode = "live",
        size: int = 3,
    ) -> None:
        url = base_url.rstrip("/") + SEARCH_PATH
        super().__init__(NAME, channel, api_key=api_key, url=url, cost_per_call=cost_per_call,
                         mode=mode)  # fmt: skip
        self._size = size

    async def find(self, query: ContactQuery, *, idempotency_key: str) -> Lookup:
        request = self._channel.client.build_request(
            "POST",
            self._url,
            headers={"X-Api-Key": self._api_key, "Idempotency-Key": idempotency_key},
            json={"query": search_query(query), "size": self._size, "titlecase": True},
        )
        exchange = await self._channel.send(request, passthrough={NO_MATCH})
        if exchange.response.status_code == NO_MATCH:
            return self._lookup((), Decimal(0), exchange.latency_ms)
        answer = self._channel.parse(exchange.response, _SearchAnswer)
        found = (candidate(person, query) for person in answer.data)
        ranked = sorted((c for c in found if c is not None), key=lambda c: -c.confidence)
        return self._lookup(tuple(ranked), self.cost_per_call, exchange.latency_ms)

    def _lookup(self, found: tuple[Candidate, ...], cost: Decimal, latency_ms: float) -> Lookup:
        return Lookup(self.name, self.mode, found, cost, latency_ms)


def candidate(person: _Person, query: ContactQuery) -> Candidate | None:
    full_name = person.full_name or " ".join(n for n in (person.first_name, person.last_name) if n)
    if not full_name:
        return None  # nobody to write to
    email = best_email(person)
    return Candidate(
        full_name=full_name,
        first_name=person.first_name,
        last_name=person.last_name,
        title=person.job_title,
        email=email,
        linkedin_url=_https(person.linkedin_url),
        country=person.location_country or query.country,
        confidence=confidence(person, email, query),
    )


def best_email(person: _Person) -> str | None:
    """The work email, else the first professional one, else the first personal one."""
    if person.work_email:
        return person.work_email
    addresses = [e for e in person.emails if e.address]
    for entry in addresses:
        if entry.type and "professional" in entry.type:
            return entry.address
    personal = [e.address for e in addresses] + person.personal_emails
    return personal[0] if personal else None


def confidence(person: _Person, email: str | None, query: ContactQuery) -> float:
    if person.likelihood is not None:
        return clamp(person.likelihood / 10)
    score = 0.4
    score += 0.3 if title_matches(query.role, person.job_title) else 0.0
    score += 0.2 if email_at(query.domain, email) else 0.0
    score += 0.05 if person.linkedin_url else 0.0
    if email is None:
        score = min(score, 0.5)
    elif not email_at(query.domain, email):
        score = min(score, 0.6)
    return round(clamp(score), 2)


def _https(url: str | None) -> str | None:
    # PDL writes profile URLs without a scheme ("linkedin.com/in/...").
    if url is None or url.startswith(("http://", "https://")):
        return url
    return "https://" + url
