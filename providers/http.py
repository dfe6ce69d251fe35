"""The HTTP discipline every provider client follows: one request, short retries, typed faults.

`Channel.send` sends one request through the provider's own `httpx.AsyncClient` and retries it
with tenacity, in process and briefly (event-level retry is the listener's job):

- 429: waits what `Retry-After` asks (seconds or an HTTP date), up to `max_retry_wait`. A
  longer wait is not slept here: `ProviderRateLimited(retry_after)` goes up at once, so the
  event is rescheduled instead of holding a worker.
- 5xx, timeouts and transport errors: exponential backoff with jitter.
- any other 4xx: never retried; `ProviderRejected` with the status and a short body excerpt.

When the attempts run out, 5xx and transport errors become `ProviderUnavailable`, 429 becomes
`ProviderRateLimited`. `Channel.parse` turns a body into the provider's pydantic model, and
malformed JSON or JSON of the wrong shape into `ProviderUnavailable`: a provider answering
nonsense is an outage, not a verdict.

The concurrency semaphore is held per attempt, not across backoff sleeps, so a call waiting
out a 429 does not keep another call from a slot.

Provider clients talk through a `CookielessClient`: no provider's Set-Cookie is ever kept or
sent back.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.cookiejar import Cookie, CookieJar
from typing import TypeVar

import httpx
import pydantic
import tenacity

from providers.base import Mode, ProviderRateLimited, ProviderRejected, ProviderUnavailable

log = logging.getLogger(__name__)

M = TypeVar("M", bound=pydantic.BaseModel)
Sleep = Callable[[float], Awaitable[None]]

# How much of an error body a fault message carries: enough to read the provider's reason,
# short enough for a log line and an event's error column.
BODY_EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries. `max_retries` counts retries after the first attempt."""

    max_retries: int = 3
    max_retry_wait: float = 30.0  # seconds: the longest Retry-After slept in process
    backoff_base: float = 0.5  # seconds: the first backoff's ceiling, doubled per retry
    backoff_max: float = 8.0  # seconds: no single backoff is longer
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def backoff(self, retry: int) -> float:
        """Full jitter (AWS's "exponential backoff and jitter"): callers that failed together
        come back spread out, not as a second burst."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (retry - 1))
        return random.uniform(0.0, ceiling)


class _KeepNothing(CookieJar):
    """A cookie jar that stores no cookie, however one is handed to it."""

    def set_cookie(self, cookie: Cookie) -> None:
        pass

    def extract_cookies(self, response: object, request: object) -> None:
        pass


class _NoCookies(httpx.Cookies):
    def __init__(self) -> None:
        super().__init__(_KeepNothing())

    def extract_cookies(self, response: httpx.Response) -> None:
        # Not even httpx's own step: it wraps the request and response for urllib first (the
        # URL as a string, a header dict, a urllib Request), a sixth of a sandbox call's CPU,
        # only for a jar that keeps nothing.
        pass


_NO_COOKIES = _NoCookies()  # stateless: its jar keeps nothing, so clients can share it


class CookielessClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` that keeps no cookies: what every provider client talks through.

    Provider APIs authenticate each call by its key. A Set-Cookie from one (a load balancer's
    affinity, a session) would otherwise be stored and sent back on every later call, state
    shared across calls and events. httpx has no switch for this (encode/httpx#2992); its
    maintainers' workaround, a jar that refuses everything (#1359), still pays for httpx's
    urllib wrapping on every response. So the client's cookies are replaced as a whole: httpx
    reads them through this property when it builds a request and when a response arrives
    (tests/unit/test_providers.py pins that a provider's cookie is never sent back).
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("provider clients keep no cookies")


@dataclass(frozen=True, slots=True)
class Exchange:
    """A response the caller has to interpret, and how long getting it took (all attempts)."""

    response: httpx.Response
    latency_ms: float


class _Retryable(Exception):
    """One failed attempt worth another; `wait` is what the provider asked for, if anything."""

    def __init__(
        self, reason: str, *, wait: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.wait = wait
        self.status = status


@dataclass(frozen=True, slots=True)
class Channel:
    """One provider's HTTP client, retry policy and concurrency bound."""

    provider: str
    client: httpx.AsyncClient
    policy: RetryPolicy = RetryPolicy()
    limit: asyncio.Semaphore | None = None

    async def send(self, request: httpx.Request, *, passthrough: Collection[int] = ()) -> Exchange:
        """The provider's answer below 400, or one whose status is in `passthrough` (a status
        the provider uses to say something other than "failed", like PDL's 404 "no match")."""
        started = time.perf_counter()
        try:
            # The first attempt goes straight out: most calls succeed and need none of the
            # retry machinery (it costs about as much as the sandbox's whole answer).
            response = await self._attempt(request, passthrough)
        except _Retryable as first:
            response = await self._retry(request, passthrough, first)
        return Exchange(response, (time.perf_counter() - started) * 1000.0)

    async def _retry(
        self, request: httpx.Request, passthrough: Collection[int], first: _Retryable
    ) -> httpx.Response:
        """Attempts 2 to max_retries + 1, after the first one failed with `first`."""
        if self.policy.max_retries < 1:
            raise self._gave_up(first) from first
        delay = self._delay(first, 1)
        self._announce(1, first, delay)
        await self.policy.sleep(delay)
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(self.policy.max_retries),
            wait=self._wait,
            sleep=self.policy.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(self._attempt, request, passthrough)
        except _Retryable as exhausted:
            raise self._gave_up(exhausted) from exhausted
        return response

    def parse(self, response: httpx.Response, model: type[M]) -> M:
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as error:
            problem = "malformed JSON" if _is_json_error(error) else "unexpected JSON shape"
            raise ProviderUnavailable(
                self.provider,
                f"{problem} in HTTP {response.status_code} answer: {excerpt(response)}",
                status=response.status_code,
            ) from error

    def rejected(self, response: httpx.Response, reason: str | None = None) -> ProviderRejected:
        detail = reason or excerpt(response)
        return ProviderRejected(
            self.provider, f"HTTP {response.status_code}: {detail}", status=response.status_code
        )

    async def _attempt(
        self, request: httpx.Request, passthrough: Collection[int]
    ) -> httpx.Response:
        try:
            async with self.limit or contextlib.nullcontext():
                response = await self.client.send(request)
        except httpx.TransportError as error:  # timeouts, refused or dropped connections
            raise _Retryable(f"{type(error).__name__}: {error}") from error
        status = response.status_code
        if status < 400 or status in passthrough:
            return response
        if status == 429:
            raise self._rate_limited(response.headers.get("Retry-After"))
        if status >= 500:
            raise _Retryable(f"HTTP {status}: {excerpt(response)}", status=status)
        raise self.rejected(response)

    def _rate_limited(self, retry_after: str | None) -> Exception:
        wait = retry_after_seconds(retry_after)
        if wait is not None and wait > self.policy.max_retry_wait:
            return ProviderRateLimited(self.provider, wait)  # not worth holding a worker for
        return _Retryable("HTTP 429", wait=wait, status=429)

    # In the retry loop, attempt n is the call's attempt n + 1 (the first went out alone).

    def _wait(self, state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        return self._delay(failure, state.attempt_number + 1)

    def _delay(self, failure: BaseException | None, attempt: int) -> float:
        """How long to wait after `attempt` failed: the provider's Retry-After, if it said."""
        if isinstance(failure, _Retryable) and failure.wait is not None:
            return failure.wait
        return self.policy.backoff(attempt)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self._announce(state.attempt_number + 1, failure, wait)

    def _announce(self, attempt: int, failure: BaseException | None, wait: float) -> None:
        log.info("%s: attempt %d failed (%s); retrying in %.2fs",
                 self.provider, attempt, failure, wait)  # fmt: skip

    def _gave_up(self, last: _Retryable) -> Exception:
        if last.status == 429:
            return ProviderRateLimited(
                self.provider, last.wait if last.wait is not None else self.policy.max_retry_wait
            )
        attempts = self.policy.max_retries + 1
        return ProviderUnavailable(
            self.provider, f"{last} (after {attempts} attempts)", status=last.status
        )


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3). Unparseable
    values are ignored (None) rather than trusted."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _seconds_until(http_date: str, now: datetime | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT, even when it forgets to say so
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS] + "..."
    return text or "(empty body)"


def _is_json_error(error: pydantic.ValidationError) -> bool:
    return any(detail["type"] == "json_invalid" for detail in error.errors())


class Client:
    """What every provider client holds: its channel, credential, endpoint and price, and
    whether it is live or a sandbox (the ContactFinder, RunStarter and EmailVerifier
    protocols read `name`, `mode` and `cost_per_call`)."""

    def __init__(
        self, name: str, channel: Channel, *, api_key: str, url: str, cost_per_call: Decimal,
        mode: Mode,
    ) -> None:  # fmt: skip
        self.name = name
        self.mode: Mode = mode
        self.cost_per_call = cost_per_call
        self._channel = channel
        self._api_key = api_key
        # Parsed once: httpx would parse a string URL again on every request.
        self._url = httpx.URL(url)
