"""Sandbox mode: in-process transports that answer each provider's real endpoints, in the
provider's own response format, with invented data. A client without credentials talks to one
of these through the very code that talks to the real API, so the whole pipeline, parsing
included, runs offline.

Everything invented is a function of a hash of the request, so the same question always gets
the same answer. Who holds a role at a domain is the same for every provider (a sandbox
company has one CEO); whether a provider finds that person, and how sure it is, depends on a
per-provider salt, so PeopleDataLabs (about 80 %) and Prospeo (about 70 %) miss different
slots and together cover most of them. About one PeopleDataLabs answer in seven carries only
a personal address (gmail.com and the like), to exercise the region rule.

Sandbox calls cost nothing. CASCADE_SANDBOX_LATENCY_MS (default 0) is awaited on every call so
that benchmarks can play a slow provider; CASCADE_SANDBOX_APIFY_DELAY_MS (default 1000) is how
long a sandbox Apify run takes before it POSTs its `scrape_done` to the callback URL.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import hashlib
import itertools
import json
import logging
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pydantic_core

from providers.base import Role
from providers.roles import title_matches

log = logging.getLogger(__name__)

T = TypeVar("T")
ROLES: tuple[Role, ...] = ("CEO", "CFO", "HR")
SANDBOX_KEY = "sandbox"  # what a sandbox client sends where the real key would go


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    latency_ms: float = 0.0  # awaited on every sandbox call
    apify_delay_ms: float = 1000.0  # from a sandbox run's start to its scrape_done

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxSettings:
        return cls(
            latency_ms=float(environ.get("CASCADE_SANDBOX_LATENCY_MS", "0")),
            apify_delay_ms=float(environ.get("CASCADE_SANDBOX_APIFY_DELAY_MS", "1000")),
        )


def announce(provider: str, variable: str) -> None:
    """The line an operator must not miss: this provider's results are made up."""
    log.warning("%s: %s is not set: sandbox mode, results are invented", provider, variable)


# --- Invented people ------------------------------------------------------------------------

FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "James",
    "Katrin", "Lukas", "Maria", "Nadia", "Oliver", "Paula", "Rafael", "Sofia", "Thomas",
    "Ursula", "Victor", "Wendy", "Yusuf", "Zoe", "Amelie", "Jonas", "Priya", "Mateo",
)  # fmt: skip
LAST_NAMES = (
    "Andersen", "Becker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hoffmann",
    "Ivanova", "Jensen", "Keller", "Lambert", "Moreau", "Novak", "Olsen", "Petrov", "Rossi",
    "Schmidt", "Taylor", "Urban", "Vogel", "Walsh", "Young", "Zimmermann", "Nakamura", "Patel",
)  # fmt: skip
# PDL's search returns the people its query matches, so most titles name the role; the HR
# ones that do not ("People Partner") are what PDL's `human_resources` role also finds.
TITLES: dict[Role, tuple[str, ...]] = {
    "CEO": ("Chief Executive Officer", "CEO", "Co-Founder & CEO", "Managing Director"),
    "CFO": ("Chief Financial Officer", "CFO", "Finance Director", "VP Finance"),
    "HR": ("Head of People", "HR Director", "Chief People Officer", "People Partner"),
}
PERSONAL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "gmx.de")


def fraction(*parts: str) -> float:
    """A number in [0, 1) that only depends on `parts`."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(options: Sequence[T], *parts: str) -> T:
    return options[int(fraction(*parts) * len(options))]


def token(length: int, *parts: str) -> str:
    """An id in the alphabet Apify uses for its ids, derived from `parts`."""
    alphabet = string.ascii_letters + string.digits
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return "".join(alphabet[byte % len(alphabet)] for byte in digest[:length])


@dataclass(frozen=True, slots=True)
class Person:
    first_name: str
    last_name: str
    title: str
    domain: str

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def work_email(self) -> str:
        return f"{self.first_name}.{self.last_name}@{self.domain}".lower()

    def personal_email(self) -> str:
        mailbox = pick(PERSONAL_DOMAINS, self.domain, self.title, "mailbox")
        return f"{self.first_name}.{self.last_name}{len(self.domain)}@{mailbox}".lower()

    @property
    def linkedin_path(self) -> str:
        suffix = token(6, self.domain, self.full_name).lower()
        return f"linkedin.com/in/{self.first_name}-{self.last_name}-{suffix}".lower()


@functools.lru_cache(maxsize=4096)
def holder(domain: str, role: Role) -> Person:
    """Who holds `role` at `domain` in the sandbox's world, whichever provider asks. Cached:
    the providers ask about the same people (a stand-in for a remote server should cost this
    process as little as it can, so that benchmarks measure Cascade, not the sandbox)."""
    domain = domain.lower()
    return Person(
        first_name=pick(FIRST_NAMES, domain, role, "first"),
        last_name=pick(LAST_NAMES, domain, role, "last"),
        title=pick(TITLES[role], domain, role, "title"),
        domain=domain,
    )


def found(salt: str, domain: str, role: Role, rate: float) -> bool:
    return fraction(salt, domain.lower(), role, "found") < rate


# --- The transports ---------------------------------------------------------------------------


class SandboxTransport(httpx.AsyncBaseTransport, abc.ABC):
    """Reads the request, waits the configured latency, and lets the provider answer: each
    provider's sandbox is a subclass that implements `answer`."""

    def __init__(self, settings: SandboxSettings = SandboxSettings()) -> None:
        self.settings = settings

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if self.settings.latency_ms > 0:
            await asyncio.sleep(self.settings.latency_ms / 1000.0)
        return await self.answer(request)

    @abc.abstractmethod
    async def answer(self, request: httpx.Request) -> httpx.Response:
        """The provider's answer to one request, in its own format."""


def _not_found(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"error": f"no sandbox route for {request.url.path}"})


class PeopleDataLabsSandbox(SandboxTransport):
    """`POST /v5/person/search`: finds the role's holder about 80 % of the time."""

    FIND_RATE = 0.8
    PERSONAL_RATE = 0.15

    async def answer(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path != "/v5/person/search":
            return _not_found(request)
        domain, role, country = read_person_query(json.loads(request.content)["query"])
        if domain is None or role is None or not found("pdl", domain, role, self.FIND_RATE):
            return _json(404, _PDL_NOT_FOUND_BODY)
        record = pdl_record(holder(domain.lower(), role), role, country)
        return _json(200, pydantic_core.to_json({"status": 200, "data": [record], "total": 1}))


_PDL_NOT_FOUND_BODY = pydantic_core.to_json(
    {
        "status": 404,
        "error": {"type": "not_found", "message": "No records were found matching your request"},
    }
)
_JSON_HEADERS = {"content-type": "application/json"}


def _json(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body, headers=_JSON_HEADERS)


def read_person_query(query: Any) -> tuple[str | None, Role | None, str | None]:
    """The domain, role and country a PDL Elasticsearch query asks about."""
    domain = country = None
    role: Role | None = None
    for field, value in _clauses(query):
        if field == "job_company_website":
            domain = value
        elif field == "location_country":
            country = value
        elif field == "job_title_role" and value == "human_resources":
            role = "HR"
        elif field == "job_title" and role is None:
            role = next((r for r in ROLES if title_matches(r, value)), None)
    return domain, role, country


def _clauses(node: Any) -> Iterator[tuple[str, str]]:
    if isinstance(node, list):
        for item in node:
            yield from _clauses(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("term", "match", "match_phrase") and isinstance(value, dict):
                yield from ((f, str(v)) for f, v in value.items())
            else:
                yield from _clauses(value)


def pdl_record(person: Person, role: Role, country: str | None) -> dict[str, Any]:
    personal = (
        fraction("pdl", person.domain, role, "personal") < PeopleDataLabsSandbox.PERSONAL_RATE
    )
    linkedin = fraction("pdl", person.domain, role, "linkedin") < 0.9
    professional = [] if personal else [{"address": person.work_email, "type": "professional"}]
    return {
        "id": token(22, "pdl", person.domain, role),
        "full_name": person.full_name,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "job_title": person.title,
        "job_title_levels": ["cxo"] if role != "HR" else ["director"],
        "job_company_website": person.domain,
        "work_email": None if personal else person.work_email,
        "emails": [*professional, {"address": person.personal_email(), "type": "personal"}],
        "personal_emails": [person.personal_email()],
        "linkedin_url": person.linkedin_path if linkedin else None,
        "location_country": country.title() if country else None,  # asked for titlecase
    }


class ProspeoSandbox(SandboxTransport):
    """`POST /domain-search`: lists the holders it finds (each about 70 % of the time) and the
    company's generic inbox, which has no position and so never matches a role."""

    FIND_RATE = 0.7

    async def answer(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path != "/domain-search":
            return _not_found(request)
        return _json(*_prospeo_answer(str(json.loads(request.content)["company"]).lower()))


@functools.lru_cache(maxsize=4096)
def _prospeo_answer(domain: str) -> tuple[int, bytes]:
    """A domain's answer is the same whichever role the caller is after: cached."""
    people = [
        prospeo_entry(holder(domain, role), role)
        for role in ROLES
        if found("prospeo", domain, role, ProspeoSandbox.FIND_RATE)
    ]
    if not people:
        return 400, pydantic_core.to_json({"error": True, "message": "NO_RESULT"})
    generic = {"email": f"info@{domain}", "email_type": "generic", "position": None}
    response = {"meta": {"total_emails": len(people) + 1}, "email_list": [*people, generic]}
    return 200, pydantic_core.to_json({"error": False, "response": response})


def prospeo_entry(person: Person, role: Role) -> dict[str, Any]:
    roll = fraction("prospeo", person.domain, role, "verification")
    status = "VALID" if roll < 0.6 else "CATCH_ALL" if roll < 0.85 else "UNAVAILABLE"
    return {
        "email": person.work_email,
        "email_type": "professional",
        "verification": {"status": status},
        "first_name": person.first_name,
        "last_name": person.last_name,
        "full_name": person.full_name,
        "position": person.title,
        "linkedin": "https://www." + person.linkedin_path,
        "department": "Human Resources" if role == "HR" else "Management",
    }


# MillionVerifier's result codes and the cumulative share of each result in the sandbox.
_MV_RESULTS = (
    (0.85, "ok", 1, "ok"),
    (0.90, "catch_all", 2, "catch_all"),
    (0.93, "unknown", 3, "timeout"),
    (0.98, "invalid", 6, "invalid_mailbox"),
    (1.00, "disposable", 5, "disposable"),
)
_MV_QUALITY = {"ok": "good", "catch_all": "risky", "unknown": "risky"}


class MillionVerifierSandbox(SandboxTransport):
    """`GET /api/v3/`: a verdict that depends only on the address."""

    async def answer(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or request.url.path != "/api/v3/":
            return _not_found(request)
        return _json(200, pydantic_core.to_json(verdict(request.url.params.get("email", ""))))


def verdict(email: str) -> dict[str, Any]:
    roll = fraction("millionverifier", email.lower())
    _, result, code, subresult = next(row for row in _MV_RESULTS if roll < row[0])
    host = email.rsplit("@", 1)[-1].lower()
    free = host in PERSONAL_DOMAINS
    role = email.split("@", 1)[0].lower() in {"info", "hr", "contact", "office", "sales"}
    quality = _MV_QUALITY.get(result, "bad")
    if quality == "good" and (free or role):
        quality = "risky"  # MillionVerifier's word for deliverable but not a person at work
    return {
        "email": email,
        "quality": quality,
        "result": result,
        "resultcode": code,
        "subresult": subresult,
        "free": free,
        "role": role,
        "didyoumean": "",
        "credits": 1_000_000,
        "executiontime": 0,
        "error": "",
        "livemode": False,
    }


class ApifySandbox(SandboxTransport):
    """`POST /v2/acts/{actor}/runs`: answers with a run at once and, after the configured
    delay, POSTs the `scrape_done` the real actor would send to the run's callback URL.

    The delivery runs in a task this transport owns; closing the client (which closes its
    transport) cancels the runs still pending. A delivery that fails is logged and dropped:
    the pipeline then times the run out, as it would a real run whose webhook was lost.
    """

    FIND_RATE = 0.75

    def __init__(
        self,
        settings: SandboxSettings = SandboxSettings(),
        *,
        callback_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(settings)
        self._callbacks = httpx.AsyncClient(transport=callback_transport, timeout=10.0)
        self._runs: set[asyncio.Task[None]] = set()
        self._sequence = itertools.count(1)

    async def answer(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        if request.method != "POST" or len(parts) != 4 or parts[:2] != ["v2", "acts"]:
            return _not_found(request)
        run_input = json.loads(request.content)
        run_id = token(17, "apify", request.content.decode(), str(next(self._sequence)))
        task = asyncio.create_task(self._finish(run_id, run_input))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return httpx.Response(201, json={"data": apify_run(run_id, parts[2])})

    async def aclose(self) -> None:
        for task in self._runs:
            task.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self._callbacks.aclose()

    async def _finish(self, run_id: str, run_input: dict[str, Any]) -> None:
        await asyncio.sleep(self.settings.apify_delay_ms / 1000.0)
        url = run_input["callback_url"]
        try:
            response = await self._callbacks.post(url, json=scrape_done(run_id, run_input))
            response.raise_for_status()
        except httpx.HTTPError as error:
            log.warning("Apify sandbox: run %s could not deliver scrape_done: %s", run_id, error)


def apify_run(run_id: str, actor: str) -> dict[str, Any]:
    return {
        "id": run_id,
        "actId": token(17, "apify-actor", actor),
        "status": "READY",
        "startedAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "defaultDatasetId": token(17, "apify-dataset", run_id),
    }


def scrape_done(run_id: str, run_input: dict[str, Any]) -> dict[str, Any]:
    """Seed 000's payload, as the real actor is expected to send it: one contact per slot
    found; slot i looks for roles[i] (or the run's only role)."""
    domain, roles, slot_ids = run_input["domain"], run_input["roles"], run_input["slot_ids"]
    contacts = [
        apify_contact(slot_id, holder(domain, role), role, run_input.get("country"))
        for index, slot_id in enumerate(slot_ids)
        if (role := roles[index % len(roles)]) and found("apify", domain, role, 0.75)
    ]
    return {
        "event": "scrape_done",
        "payload": {
            "slot_ids": slot_ids,
            "contacts": contacts,
            "run_id": run_id,
            "unique_id": run_input.get("unique_id"),
            "process_id": run_input.get("process_id"),
        },
    }


def apify_contact(slot_id: int, person: Person, role: Role, country: str | None) -> dict[str, Any]:
    return {
        "slot_id": slot_id,
        "full_name": person.full_name,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "title": person.title,
        "email": person.work_email,
        "linkedin_url": "https://www." + person.linkedin_path,
        "country": country,
        "confidence": round(0.55 + 0.4 * fraction("apify", person.domain, role, "conf"), 2),
    }
