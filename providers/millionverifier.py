"""MillionVerifier: is this address deliverable?

`GET {base}/api/v3/?api=KEY&email=...&timeout=N` (N: seconds MillionVerifier may spend on the
SMTP check, 2 to 60). The answer carries email, quality (good/risky/bad), result, resultcode,
subresult, free, role, credits, error and livemode. The key travels in the query string, so
nothing here ever logs the URL.

`result` ok, catch_all, unknown, invalid and disposable are verdicts and become an EmailCheck.
`result: "error"` is not: MillionVerifier answers a bad key or an empty account with HTTP 200,
result "error" and a message in `error`, and that is raised as ProviderFault, never recorded
as something about the address.

Score, in [0, 1]: MillionVerifier gives none, so it is derived. By result: ok 0.95, catch_all
0.5 (the server accepts every address, so this one proves nothing), unknown 0.3, disposable
0.05, invalid 0. Then capped by MillionVerifier's own `quality`: risky at most 0.75 (role and
free-mail addresses land here), bad at most 0.1.

Cost: `cost_per_call` per verdict.
"""

from __future__ import annotations

from decimal import Decimal
from typing import get_args

from pydantic import BaseModel, ConfigDict

from providers.base import (
    EmailCheck,
    Mode,
    ProviderFault,
    ProviderUnavailable,
    VerificationResult,
)
from providers.http import Channel, Client

NAME = "millionverifier"
DEFAULT_BASE_URL = "https://api.millionverifier.com"
DEFAULT_COST_PER_CALL = Decimal("0.004")
VERIFY_PATH = "/api/v3/"

VERDICTS: dict[str, VerificationResult] = {
    result: result for result in get_args(VerificationResult)
}
_RESULT_SCORE: dict[VerificationResult, float] = {
    "ok": 0.95,
    "catch_all": 0.5,
    "unknown": 0.3,
    "disposable": 0.05,
    "invalid": 0.0,
}
_QUALITY_CAP: dict[str, float] = {"good": 1.0, "risky": 0.75, "bad": 0.1}


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")
    email: str | None = None
    quality: str | None = None
    result: str
    resultcode: int | None = None
    subresult: str | None = None
    free: bool | None = None
    role: bool | None = None
    credits: int | None = None
    error: str | None = None
    livemode: bool | None = None


def score(result: VerificationResult, quality: str | None) -> float:
    return min(_RESULT_SCORE[result], _QUALITY_CAP.get((quality or "").lower(), 1.0))


class MillionVerifier(Client):
    """An EmailVerifier over MillionVerifier's single-address API."""

    def __init__(
        self,
        channel: Channel,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        cost_per_call: Decimal = DEFAULT_COST_PER_CALL,
        mode: Mode = "live",
        verify_timeout: int = 10,
    ) -> None:
        url = base_url.rstrip("/") + VERIFY_PATH
        super().__init__(NAME, channel, api_key=api_key, url=url, cost_per_call=cost_per_call,
                         mode=mode)  # fmt: skip
        self._verify_timeout = min(60, max(2, verify_timeout))

    async def verify(self, email: str, *, idempotency_key: str) -> EmailCheck:
        request = self._channel.client.build_request(
            "GET",
            self._url,
            params={"api": self._api_key, "email": email, "timeout": self._verify_timeout},
            headers={"Idempotency-Key": idempotency_key},
        )
        exchange = await self._channel.send(request)
        answer = self._channel.parse(exchange.response, _Answer)
        result = self._verdict(answer)
        return EmailCheck(
            provider=self.name,
            mode=self.mode,
            email=answer.email or email,
            result=result,
            score=score(result, answer.quality),
            quality=answer.quality,
            subresult=answer.subresult,
            cost=self.cost_per_call,
            latency_ms=exchange.latency_ms,
            raw=answer.model_dump(),
        )

    def _verdict(self, answer: _Answer) -> VerificationResult:
        if answer.result == "error":
            raise ProviderFault(self.name, answer.error or "result 'error' without a message")
        verdict = VERDICTS.get(answer.result)
        if verdict is None:
            raise ProviderUnavailable(self.name, f"unexpected result {answer.result!r}")
        return verdict
