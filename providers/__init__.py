"""The enrichment and verification providers, opened together for a process's lifetime.

`open_providers(environ)` builds each client live when its credentials are set (a non-empty
value) and in sandbox mode otherwise (providers/sandbox.py), gives each its own
`httpx.AsyncClient`, retry policy and concurrency bound, and closes them all on exit.

Settings (environment, with defaults):
  PROVIDER_TIMEOUT_SECONDS        10  each HTTP request, connect to last byte
  PROVIDER_MAX_RETRIES             3  retries after the first attempt (429, 5xx, transport)
  PROVIDER_MAX_RETRY_WAIT_SECONDS 30  the longest Retry-After slept in process
  PROVIDER_CONCURRENCY             8  calls in flight per provider in this process
and per provider its key, base URL and cost per call (see each module).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

import httpx

from providers import apify, millionverifier, peopledatalabs, prospeo, sandbox
from providers.base import ContactFinder, EmailVerifier, RunStarter
from providers.http import Channel, RetryPolicy


@dataclass(frozen=True, slots=True)
class ProviderSet:
    """The clients the enrichment phase uses: the waterfall's finders by name, the
    asynchronous run starter and the verifier."""

    finders: dict[str, ContactFinder]
    apify: RunStarter
    verifier: EmailVerifier


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    timeout: float = 10.0  # seconds per HTTP request
    max_retries: int = 3
    max_retry_wait: float = 30.0  # seconds
    concurrency: int = 8  # calls in flight per provider

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProviderSettings:
        return cls(
            timeout=float(environ.get("PROVIDER_TIMEOUT_SECONDS", "10")),
            max_retries=int(environ.get("PROVIDER_MAX_RETRIES", "3")),
            max_retry_wait=float(environ.get("PROVIDER_MAX_RETRY_WAIT_SECONDS", "30")),
            concurrency=int(environ.get("PROVIDER_CONCURRENCY", "8")),
        )


@contextlib.asynccontextmanager
async def open_providers(environ: Mapping[str, str]) -> AsyncIterator[ProviderSet]:
    async with contextlib.AsyncExitStack() as stack:
        opener = _Opener(ProviderSettings.from_env(environ), stack)
        sandboxed = sandbox.SandboxSettings.from_env(environ)
        finders: dict[str, ContactFinder] = {
            peopledatalabs.NAME: _peopledatalabs(environ, opener, sandboxed),
            prospeo.NAME: _prospeo(environ, opener, sandboxed),
        }
        yield ProviderSet(
            finders=finders,
            apify=_apify(environ, opener, sandboxed),
            verifier=_millionverifier(environ, opener, sandboxed),
        )


@dataclass(frozen=True, slots=True)
class _Opener:
    settings: ProviderSettings
    stack: contextlib.AsyncExitStack

    def channel(self, provider: str, transport: httpx.AsyncBaseTransport | None = None) -> Channel:
        size = self.settings.concurrency
        client = httpx.AsyncClient(
            transport=transport,
            timeout=self.settings.timeout,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        )
        self.stack.push_async_callback(client.aclose)
        policy = RetryPolicy(
            max_retries=self.settings.max_retries, max_retry_wait=self.settings.max_retry_wait
        )
        return Channel(provider, client, policy, asyncio.Semaphore(size))


def _cost(environ: Mapping[str, str], variable: str, default: Decimal) -> Decimal:
    return Decimal(environ.get(variable) or default)


def _peopledatalabs(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> peopledatalabs.PeopleDataLabs:
    name = peopledatalabs.NAME
    if key := environ.get("PEOPLEDATALABS_API_KEY"):
        return peopledatalabs.PeopleDataLabs(
            opener.channel(name),
            api_key=key,
            base_url=environ.get("PEOPLEDATALABS_BASE_URL") or peopledatalabs.DEFAULT_BASE_URL,
            cost_per_call=_cost(
                environ, "PEOPLEDATALABS_COST_PER_CALL", peopledatalabs.DEFAULT_COST_PER_CALL
            ),
        )
    sandbox.announce("PeopleDataLabs", "PEOPLEDATALABS_API_KEY")
    return peopledatalabs.PeopleDataLabs(
        opener.channel(name, sandbox.PeopleDataLabsSandbox(sandboxed)),
        api_key=sandbox.SANDBOX_KEY,
        cost_per_call=Decimal(0),
        mode="sandbox",
    )


def _prospeo(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> prospeo.Prospeo:
    if key := environ.get("PROSPEO_API_KEY"):
        return prospeo.Prospeo(
            opener.channel(prospeo.NAME),
            api_key=key,
            base_url=environ.get("PROSPEO_BASE_URL") or prospeo.DEFAULT_BASE_URL,
            cost_per_call=_cost(environ, "PROSPEO_COST_PER_CALL", prospeo.DEFAULT_COST_PER_CALL),
        )
    sandbox.announce("Prospeo", "PROSPEO_API_KEY")
    return prospeo.Prospeo(
        opener.channel(prospeo.NAME, sandbox.ProspeoSandbox(sandboxed)),
        api_key=sandbox.SANDBOX_KEY,
        cost_per_call=Decimal(0),
        mode="sandbox",
    )


def _apify(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> apify.Apify:
    actor_id = environ.get("APIFY_ACTOR_ID") or apify.DEFAULT_ACTOR_ID
    if token := environ.get("APIFY_TOKEN"):
        return apify.Apify(
            opener.channel(apify.NAME),
            token=token,
            base_url=environ.get("APIFY_BASE_URL") or apify.DEFAULT_BASE_URL,
            actor_id=actor_id,
            cost_per_call=_cost(environ, "APIFY_COST_PER_CALL", apify.DEFAULT_COST_PER_CALL),
        )
    sandbox.announce("Apify", "APIFY_TOKEN")
    return apify.Apify(
        opener.channel(apify.NAME, sandbox.ApifySandbox(sandboxed)),
        token=sandbox.SANDBOX_KEY,
        actor_id=actor_id,
        cost_per_call=Decimal(0),
        mode="sandbox",
    )


def _millionverifier(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> millionverifier.MillionVerifier:
    name = millionverifier.NAME
    # MillionVerifier's own SMTP timeout must end before our HTTP timeout does.
    verify_timeout = int(opener.settings.timeout) - 1
    if key := environ.get("MILLIONVERIFIER_API_KEY"):
        return millionverifier.MillionVerifier(
            opener.channel(name),
            api_key=key,
            base_url=environ.get("MILLIONVERIFIER_BASE_URL") or millionverifier.DEFAULT_BASE_URL,
            cost_per_call=_cost(
                environ, "MILLIONVERIFIER_COST_PER_CALL", millionverifier.DEFAULT_COST_PER_CALL
            ),
            verify_timeout=verify_timeout,
        )
    sandbox.announce("MillionVerifier", "MILLIONVERIFIER_API_KEY")
    return millionverifier.MillionVerifier(
        opener.channel(name, sandbox.MillionVerifierSandbox(sandboxed)),
        api_key=sandbox.SANDBOX_KEY,
        cost_per_call=Decimal(0),
        mode="sandbox",
        verify_timeout=verify_timeout,
    )
