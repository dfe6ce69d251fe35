"""Seed 000's verification gate: what a verifier's answer means for sending.

`ok` sends on when its score clears VALIDATION_THRESHOLD; `catch_all` follows the policy
(`send`: treated as ok; `hold`: kept as risky for a person to decide; `reject`); `unknown`
is checked again later, up to a limit, then ends unverifiable; `invalid` and `disposable`
stop. A provider fault (MillionVerifier's HTTP 200 with `result: error`) never reaches here:
it is an exception, not a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from cascade.enrichment.settings import EnrichmentSettings
from providers.base import EmailCheck


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # deliverable, undeliverable, risky, unverifiable
    reason: str | None


def gate(check: EmailCheck, settings: EnrichmentSettings, unknown_checks: int) -> Verdict | None:
    """The verdict, or None for "ask again later". `unknown_checks` counts earlier unknowns."""
    threshold = settings.validation_threshold
    if check.result == "unknown":
        if unknown_checks + 1 < settings.max_unknown_checks:
            return None
        return Verdict("unverifiable", f"unknown after {unknown_checks + 1} checks")
    if check.result in ("invalid", "disposable"):
        return Verdict("undeliverable", f"{check.result} ({check.subresult or 'no detail'})")
    if check.result == "catch_all":
        if settings.catch_all_policy == "hold":
            return Verdict(
                "risky", "catch-all domain held for review (VERIFICATION_CATCH_ALL=hold)"
            )
        if settings.catch_all_policy == "reject":
            return Verdict("undeliverable", "catch-all domain (VERIFICATION_CATCH_ALL=reject)")
    if check.score < threshold:
        return Verdict(
            "risky", f"{check.result} with score {check.score:.2f} below {threshold:.2f}"
        )
    return Verdict("deliverable", None)
