"""The enrichment and verification providers, opened together for a process's lifetime.

`open_providers(environ)` builds each client live when its credentials are set (a non-empty
value) and in sandbox mode otherwise (providers/sandbox.py), gives each its own
HTTP client (a cookie-less `httpx.AsyncClient`), retry policy and concurrency bound, and
closes them all on exit.

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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import httpx

from providers import apify, millionverifier, peopledatalabs, prospeo, sandbox
from providers.base import ContactFinder, EmailVerifier, Mode, RunStarter
from providers.http import Channel, CookielessClient, RetryPolicy

T = TypeVar("T")


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
        client = CookielessClient(
            transport=transport,
            timeout=self.settings.timeout,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        )
        self.stack.push_async_callback(client.aclose)
        policy = RetryPolicy(
            max_retries=self.settings.max_retries, max_retry_wait=self.settings.max_retry_wait
        )
        return Channel(provider, client, policy, asyncio.Semaphore(size))


@dataclass(frozen=True, slots=True)
class _Account:
    """How one provider is configured: the variables of its credential, endpoint and price."""

    name: str
    label: str  # as the sandbox announcement names it
    key_variable: str
    default_base: str
    default_cost: Decimal

    @property
    def prefix(self) -> str:
        return self.key_variable.split("_")[0]


# Builds a client from (channel, credential, base URL, cost per call, mode).
Make = Callable[[Channel, str, str, Decimal, Mode], T]


def _client(
    environ: Mapping[str, str],
    opener: _Opener,
    account: _Account,
    sandbox_transport: httpx.AsyncBaseTransport,
    make: Make[T],
) -> T:
    """The live client when the account's credential is set; otherwise the same client
    talking to its sandbox stand-in, at no cost, and said so in the log."""
    if key := environ.get(account.key_variable):
        base = environ.get(f"{account.prefix}_BASE_URL") or account.default_base
        cost = Decimal(environ.get(f"{account.prefix}_COST_PER_CALL") or account.default_cost)
        return make(opener.channel(account.name), key, base, cost, "live")
    sandbox.announce(account.label, account.key_variable)
    channel = opener.channel(account.name, sandbox_transport)
    return make(channel, sandbox.SANDBOX_KEY, account.default_base, Decimal(0), "sandbox")


PEOPLEDATALABS = _Account(
    peopledatalabs.NAME, "PeopleDataLabs", "PEOPLEDATALABS_API_KEY",
    peopledatalabs.DEFAULT_BASE_URL, peopledatalabs.DEFAULT_COST_PER_CALL,
)  # fmt: skip
PROSPEO = _Account(
    prospeo.NAME, "Prospeo", "PROSPEO_API_KEY", prospeo.DEFAULT_BASE_URL,
    prospeo.DEFAULT_COST_PER_CALL,
)  # fmt: skip
APIFY = _Account(
    apify.NAME, "Apify", "APIFY_TOKEN", apify.DEFAULT_BASE_URL, apify.DEFAULT_COST_PER_CALL
)
MILLIONVERIFIER = _Account(
    millionverifier.NAME, "MillionVerifier", "MILLIONVERIFIER_API_KEY",
    millionverifier.DEFAULT_BASE_URL, millionverifier.DEFAULT_COST_PER_CALL,
)  # fmt: skip


def _peopledatalabs(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> peopledatalabs.PeopleDataLabs:
    def make(
        channel: Channel, key: str, base: str, cost: Decimal, mode: Mode
    ) -> peopledatalabs.PeopleDataLabs:
        return peopledatalabs.PeopleDataLabs(
            channel, api_key=key, base_url=base, cost_per_call=cost, mode=mode
        )

    return _client(environ, opener, PEOPLEDATALABS, sandbox.PeopleDataLabsSandbox(sandboxed), make)


def _prospeo(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> prospeo.Prospeo:
    def make(channel: Channel, key: str, base: str, cost: Decimal, mode: Mode) -> prospeo.Prospeo:
        return prospeo.Prospeo(channel, api_key=key, base_url=base, cost_per_call=cost, mode=mode)

    return _client(environ, opener, PROSPEO, sandbox.ProspeoSandbox(sandboxed), make)


def _apify(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> apify.Apify:
    actor_id = environ.get("APIFY_ACTOR_ID") or apify.DEFAULT_ACTOR_ID

    def make(channel: Channel, key: str, base: str, cost: Decimal, mode: Mode) -> apify.Apify:
        return apify.Apify(
            channel, api_key=key, base_url=base, actor_id=actor_id, cost_per_call=cost, mode=mode
        )

    return _client(environ, opener, APIFY, sandbox.ApifySandbox(sandboxed), make)


def _millionverifier(
    environ: Mapping[str, str], opener: _Opener, sandboxed: sandbox.SandboxSettings
) -> millionverifier.MillionVerifier:
    # MillionVerifier's own SMTP timeout must end before our HTTP timeout does.
    verify_timeout = int(opener.settings.timeout) - 1

    def make(
        channel: Channel, key: str, base: str, cost: Decimal, mode: Mode
    ) -> millionverifier.MillionVerifier:
        return millionverifier.MillionVerifier(
            channel, api_key=key, base_url=base, cost_per_call=cost, mode=mode,
            verify_timeout=verify_timeout,
        )  # fmt: skip

    return _client(
        environ, opener, MILLIONVERIFIER, sandbox.MillionVerifierSandbox(sandboxed), make
    )
