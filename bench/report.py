"""Measurements and the markdown report a run writes (bench/out/report.md)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass
class Measurement:
    """One number of one scenario: the median of `runs` where a measurement was repeated."""

    scenario: str
    subject: str
    metric: str
    runs: list[float]
    unit: str
    detail: str = ""

    @property
    def value(self) -> float:
        return statistics.median(self.runs)


@dataclass(frozen=True)
class Timing:
    """One drain: `window` from the first event in hand to the last one committed (what the
    throughput figures use), `wall` from the consumer's start to its return (startup,
    idle detection and shutdown included)."""

    window: float  # seconds
    wall: float  # seconds
    processed: int


@dataclass
class Verdict:
    """A target from the issue, checked against the measured numbers."""

    scenario: str
    target: str
    measured: str
    met: bool


@dataclass
class Section:
    """A scenario's numbers, its targets and how it was run."""

    title: str
    how: str
    measurements: list[Measurement] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(facts: dict[str, str], sections: Iterable[Section], command: str) -> str:
    lines = ["# Cascade benchmark run", "", f"Command: `{command}`", "", "| fact | value |"]
    lines += ["| --- | --- |", *(f"| {k} | {v} |" for k, v in facts.items()), ""]
    for section in sections:
        lines += [f"## {section.title}", "", section.how, ""]
        lines += _measurement_table(section.measurements)
        if section.verdicts:
            lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
            lines += [
                f"| {v.target} | {v.measured} | {'yes' if v.met else '**no**'} |"
                for v in section.verdicts
            ]
        lines.append("")
    return "\n".join(lines)


def _measurement_table(measurements: Sequence[Measurement]) -> list[str]:
    lines = ["| subject | metric | value | runs | detail |", "| --- | --- | --- | --- | --- |"]
    for m in measurements:
        runs = ", ".join(fmt(r) for r in m.runs) if len(m.runs) > 1 else ""
        lines.append(
            f"| {m.subject} | {m.metric} | {fmt(m.value)} {m.unit} | {runs} | {m.detail} |"
        )
    return lines
