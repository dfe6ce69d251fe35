"""Prospeo domain search: the people and emails Prospeo knows at a company's domain, filtered
here to the role asked for.

`POST {base}/domain-search` with `X-KEY` and `{"company": domain, "limit": N}`. Prospeo answers
`{"error": false, "response": {"email_list": [...]}}`, and its errors as `{"error": true,
"message": CODE}` (usually with a 4xx): NO_RESULT is "nobody found" (an empty Lookup),
INVALID_API_KEY is a rejection, INSUFFICIENT_CREDITS a fault (the account, not the request, is
the problem), anything else a rejection.

Confidence is Prospeo's verification status of the address: VALID 0.9, CATCH_ALL/ACCEPT_ALL
0.6 (the domain accepts everything, so the address may not exist), anything unverified 0.45.
An address Prospeo calls INVALID is dropped: there is no one to write to.

Cost: `cost_per_call` for an answer with results; Prospeo charges nothing for NO_RESULT.

A domain search answers for every role at once, and the waterfall asks about a company's
slots at the same time: concurrent searches for one domain share a single request (the first
caller's, with its idempotency key), so a company costs one search, not one per slot. The
callers that joined it get the answer, or its failure, at no cost.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
from pydantic import BaseModel, ConfigDict

from providers.base import (
    Candidate,
    ContactQuery,
    Lookup,
    Mode,
    ProviderError,
    ProviderFault,
    ProviderRejected,
)
from providers.http import Channel, Client, excerpt
from providers.roles import title_matches

NAME = "prospeo"
DEFAULT_BASE_URL = "https://api.prospeo.io"
DEFAULT_COST_PER_CALL = Decimal("0.04")
SEARCH_PATH = "/domain-search"
# Prospeo puts its error code in the body of these; the client reads it before judging.
ERROR_STATUSES = frozenset({400, 401, 402, 403, 404})

NO_RESULT = "NO_RESULT"
ACCOUNT_FAULTS = frozenset({"INSUFFICIENT_CREDITS"})

_CONFIDENCE = {"VALID": 0.9, "CATCH_ALL": 0.6, "ACCEPT_ALL": 0.6}
UNVERIFIED_CONFIDENCE = 0.45


class _Verification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: str | None = None


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str | None = None
    email_type: str | None = None
    verification: _Verification | None = None
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    position: str | None = None
    linkedin: str | None = None


class _Found(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email_list: list[_Entry]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    error: bool
    message: str | None = None
    response: _Found | None = None


class Prospeo(Client):
    """A ContactFinder over Prospeo's domain search."""

    def __init__(
        self,
        channel: Channel,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        cost_per_call: Decimal = DEFAULT_COST_PER_CALL,
        mode: Mode = "live",
        limit: int = 50,
    ) -> None:
        url = base_url.rstrip("/") + SEARCH_PATH
        super().__init__(NAME, channel, api_key=api_key, url=url, cost_per_call=cost_per_call,
                         mode=mode)  # fmt: skip
        self._limit = limit
        self._searching: dict[str, asyncio.Task[tuple[list[_Entry], float]]] = {}
        self._waiting: dict[asyncio.Task[tuple[list[_Entry], float]], int] = {}  # callers

    async def find(self, query: ContactQuery, *, idempotency_key: str) -> Lookup:
        domain = query.domain.lower()
        search = self._searching.get(domain)
        joined = search is not None
        if search is None:
            search = asyncio.ensure_future(self._search(domain, idempotency_key))
            self._searching[domain] = search
            self._waiting[search] = 0
            search.add_done_callback(self._searched)
        self._waiting[search] += 1
        try:
            # Shielded: a caller that is cancelled leaves the search to the others...
            entries, latency_ms = await asyncio.shield(search)
        except asyncio.CancelledError:
            # ...and the last one to go takes it down: no paid request outlives its callers
            # (a listener stopping hands their events to another, which asks again).
            if self._waiting.get(search) == 1:
                search.cancel()
            raise
        finally:
            if search in self._waiting:
                self._waiting[search] -= 1
        found = (candidate(entry, query) for entry in entries)
        ranked = sorted((c for c in found if c is not None), key=lambda c: -c.confidence)
        cost = self.cost_per_call if entries and not joined else Decimal(0)
        return Lookup(self.name, self.mode, tuple(ranked), cost, latency_ms)

    def _searched(self, search: asyncio.Task[tuple[list[_Entry], float]]) -> None:
        self._waiting.pop(search, None)
        for domain, running in list(self._searching.items()):
            if running is search:
                del self._searching[domain]
        if not search.cancelled():
            search.exception()  # its callers were told; nobody left waiting must not warn

    async def _search(self, domain: str, idempotency_key: str) -> tuple[list[_Entry], float]:
        """The people Prospeo lists at the domain (none for NO_RESULT), and the latency."""
        request = self._channel.client.build_request(
            "POST",
            self._url,
            headers={"X-KEY": self._api_key, "Idempotency-Key": idempotency_key},
            json={"company": domain, "limit": self._limit},
        )
        exchange = await self._channel.send(request, passthrough=ERROR_STATUSES)
        answer = self._answer(exchange.response)
        if answer.error:
            if answer.message == NO_RESULT:
                return [], exchange.latency_ms
            raise self._fault(exchange.response, answer.message)
        return (answer.response.email_list if answer.response else []), exchange.latency_ms

    def _answer(self, response: httpx.Response) -> _Answer:
        if response.status_code in ERROR_STATUSES:
            try:
                answer = _Answer.model_validate_json(response.content)
            except ValueError:
                answer = None
            if answer is None or not answer.error:  # a 4xx without Prospeo's error body
                raise self._channel.rejected(response)
            return answer
        return self._channel.parse(response, _Answer)

    def _fault(self, response: httpx.Response, code: str | None) -> ProviderError:
        status = response.status_code
        message = f"{code or 'error without a message'} (HTTP {status})"
        if code in ACCOUNT_FAULTS:
            return ProviderFault(self.name, message, status=status)
        if status < 400:
            message += f": {excerpt(response)}"
        return ProviderRejected(self.name, message, status=status)


def candidate(entry: _Entry, query: ContactQuery) -> Candidate | None:
    status = (entry.verification.status if entry.verification else None) or ""
    if status.upper() == "INVALID" or not title_matches(query.role, entry.position):
        return None
    full_name = entry.full_name or " ".join(n for n in (entry.first_name, entry.last_name) if n)
    if not full_name:
        return None
    return Candidate(
        full_name=full_name,
        first_name=entry.first_name,
        last_name=entry.last_name,
        title=entry.position,
        email=entry.email,
        linkedin_url=entry.linkedin,
        country=query.country,  # domain search says nothing about where people are
        confidence=_CONFIDENCE.get(status.upper(), UNVERIFIED_CONFIDENCE),
    )
