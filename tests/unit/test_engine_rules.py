"""The engine's pure rules: how failures are judged, how backoff grows, how settings are read,
and what the handler registry accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from cascade.handling import Deps, Registry
from cascade.retries import EventTypeSettings, bounded_delay, judge_failure, storable
from listener import ListenerSettings
from tests.support.handlers import handler_module, stage

SCHEMA = Path(__file__).resolve().parents[2] / "schema"


def test_judge_failure__retries_a_critical_event_until_its_last_attempt() -> None:
    settings = EventTypeSettings(max_attempts=3)

    verdicts = [judge_failure(settings, attempt, permanent=False) for attempt in (1, 2, 3)]

    assert [(v.status, v.severity) for v in verdicts] == [
        ("failed", "error"),
        ("failed", "error"),
        ("dead", "critical"),
    ]


def test_judge_failure__a_permanent_failure_is_dead_at_once() -> None:
    verdict = judge_failure(EventTypeSettings(max_attempts=5), 1, permanent=True)

    assert (verdict.status, verdict.outcome, verdict.delay) == ("dead", "dead", 0.0)


def test_judge_failure__a_non_critical_event_gives_up_as_skipped_with_a_warning() -> None:
    settings = EventTypeSettings(critical=False, max_attempts=2)

    first, last = (judge_failure(settings, a, permanent=False) for a in (1, 2))

    assert (first.status, first.severity) == ("failed", "warning")
    assert (last.status, last.outcome, last.severity) == ("processed", "skipped", "warning")


def test_backoff__doubles_per_attempt_with_jitter_and_a_ceiling() -> None:
    settings = EventTypeSettings(backoff_base_seconds=2, backoff_max_seconds=60)

    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)]:
        delays = {settings.backoff(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


def test_event_type_settings__defaults_match_the_sql_column_defaults() -> None:
    core = (SCHEMA / "0001.engine-core.sql").read_text()
    table = core[core.index("CREATE TABLE marketing.event_types") :]

    def sql_default(column: str) -> float:
        match = re.search(rf"{column}\s+\w+(?: precision)?\s+NOT NULL DEFAULT (\S+?),", table)
        assert match, column
        return float(match.group(1))

    defaults = EventTypeSettings()
    assert sql_default("max_attempts") == defaults.max_attempts
    assert sql_default("backoff_base_seconds") == defaults.backoff_base_seconds
    assert sql_default("backoff_max_seconds") == defaults.backoff_max_seconds
    # The rescue function falls back to the same default for types missing from the table.
    functions = (SCHEMA.parent / "triggers" / "500_engine_functions.sql").read_text()
    assert f"coalesce(et.max_attempts, {defaults.max_attempts})" in functions


def test_listener_settings__read_from_cascade_prefixed_environment() -> None:
    settings = ListenerSettings.from_env(
        "postgresql://x/y", {"CASCADE_BATCH_SIZE": "250", "CASCADE_POLL_INTERVAL": "0.5"}
    )

    assert (settings.batch_size, settings.poll_interval) == (250, 0.5)
    assert settings.lease_seconds == ListenerSettings("postgresql://x/y").lease_seconds


def test_registry__refuses_two_handlers_for_one_event_type() -> None:
    with pytest.raises(ValueError, match="two handlers for 'test_noop'"):
        Registry((handler_module("test_noop", stage(None)), handler_module("test_noop", stage(1))))


def test_registry__refuses_a_module_without_an_async_handle() -> None:
    module = handler_module("test_noop", stage(None))
    module.handle = lambda payload, deps: None  # type: ignore[attr-defined]

    with pytest.raises(TypeError, match="has no `async def handle"):
        Registry((module,))


def test_registry__sorts_external_handlers_onto_the_lease_path() -> None:
    class Nothing(BaseModel, frozen=True):
        pass

    async def call(payload: Nothing, deps: Deps) -> None:
        return None

    registry = Registry(
        (
            handler_module("test_external", call, Nothing, external=True),
            handler_module("test_noop", call, Nothing),
        )
    )

    assert registry.external_types == frozenset({"test_external"})


def test_bounded_delay__keeps_delays_storable() -> None:
    assert bounded_delay(float("inf")) == 7 * 24 * 3600
    assert bounded_delay(float("nan")) == 0.0
    assert bounded_delay(-5) == 0.0


def test_storable__escapes_nul_bytes_postgres_would_refuse() -> None:
    assert storable("bad\x00byte") == "bad\\x00byte"
