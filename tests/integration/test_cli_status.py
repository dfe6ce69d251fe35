"""`cascade status`: the queue, the listeners and the Phase 1 metrics, as JSON."""

from __future__ import annotations

import json

import pytest

from cascade.cli import main


def test_status__prints_the_queue_listeners_and_phase1_metrics(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)

    with pytest.raises(SystemExit) as exited:
        main(["status"])

    assert exited.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"queue", "listeners", "phase1_metrics"}
    assert [m["metric"] for m in report["phase1_metrics"]] == [
        "validation_success_rate",
        "email_enrichment_rate",
        "email_deliverability",
        "end_to_end_latency_p95",
    ]
