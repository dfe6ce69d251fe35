"""What a failed attempt becomes: retry later, dead letter, or (for a non-critical type) a
skipped stage. Pure rules, kept apart from the listener's plumbing so they read as policy."""

from __future__ import annotations

import random
from dataclasses import dataclass

# No retry waits longer than this, whatever a handler or a Retry-After header asks for: a
# week is already "someone must look at this", and PostgreSQL's interval has a finite range.
MAX_DELAY_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class EventTypeSettings:
    """A type's retry and concurrency settings; the defaults mirror marketing.event_types'."""

    critical: bool = True
    max_attempts: int = 5
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    concurrency_limit: int | None = None

    def backoff(self, attempt: int) -> float:
        """Exponential in the attempt, capped, with jitter so that a burst of failures does
        not come back as a burst of retries."""
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** (attempt - 1))
        return bounded_delay(ceiling * random.uniform(0.5, 1.0))


@dataclass(frozen=True)
class Verdict:
    """What a failed attempt becomes."""

    status: str  # failed (will retry) | dead | processed (a non-critical type gave up)
    outcome: str | None
    severity: str
    delay: float


def judge_failure(settings: EventTypeSettings, attempt: int, *, permanent: bool) -> Verdict:
    if not permanent and attempt < settings.max_attempts:
        severity = "error" if settings.critical else "warning"
        return Verdict("failed", None, severity, settings.backoff(attempt))
    if settings.critical:
        return Verdict("dead", "dead", "critical", 0.0)
    # Seed 002's non-critical stage: warn and let the run go on.
    return Verdict("processed", "skipped", "warning", 0.0)


def bounded_delay(seconds: float) -> float:
    """A delay PostgreSQL can store: finite, not negative, at most MAX_DELAY_SECONDS."""
    if seconds != seconds:  # NaN
        return 0.0
    return min(max(seconds, 0.0), MAX_DELAY_SECONDS)


def storable(text: str) -> str:
    """Text PostgreSQL will accept: an exception's message may carry NUL bytes."""
    return text.replace("\x00", "\\x00")
