"""Seed 000's verification gate: ok sends on, catch-all follows the policy, unknown is asked
again (then gives up), invalid and disposable stop, and the threshold applies to the score."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cascade.enrichment.settings import EnrichmentSettings
from cascade.enrichment.verification import Verdict, gate
from providers.base import EmailCheck, VerificationResult


def check(result: VerificationResult, score: float = 0.95) -> EmailCheck:
    return EmailCheck(
        "millionverifier", "sandbox", "anna@acme.de", result, score, "good", None, Decimal(0), 1.0
    )


@pytest.mark.parametrize(
    ("result", "verdict"),
    [("ok", "deliverable"), ("invalid", "undeliverable"), ("disposable", "undeliverable")],
)
def test_gate__maps_each_conclusive_result(result: VerificationResult, verdict: str) -> None:
    decided = gate(check(result), EnrichmentSettings(), 0)

    assert decided is not None
    assert decided.verdict == verdict


@pytest.mark.parametrize(
    ("policy", "verdict"),
    [("send", "deliverable"), ("hold", "risky"), ("reject", "undeliverable")],
)
def test_gate__catch_all_follows_the_policy(policy: str, verdict: str) -> None:
    decided = gate(check("catch_all"), EnrichmentSettings(catch_all_policy=policy), 0)

    assert decided is not None
    assert decided.verdict == verdict


def test_gate__an_ok_below_the_threshold_is_not_sent_on() -> None:
    decided = gate(check("ok", score=0.75), EnrichmentSettings(validation_threshold=0.8), 0)

    assert decided == Verdict("risky", "ok with score 0.75 below 0.80")


def test_gate__unknown_asks_again_then_gives_up_as_unverifiable() -> None:
    settings = EnrichmentSettings(max_unknown_checks=3)

    assert gate(check("unknown"), settings, 0) is None
    assert gate(check("unknown"), settings, 1) is None
    assert gate(check("unknown"), settings, 2) == Verdict("unverifiable", "unknown after 3 checks")
