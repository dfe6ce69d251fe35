"""Barton IDs: the check digits catch a mistyped ID."""

from __future__ import annotations

from cascade.barton import is_valid_barton_id, serial_of


def test_barton_id__round_trips_its_serial() -> None:
    assert serial_of("04.04.01.00.00001.095") == 1
    assert serial_of("04.04.01.00.00002.092") == 2


def test_barton_id__a_mistyped_digit_fails_the_check() -> None:
    assert not is_valid_barton_id("04.04.01.00.00003.092")
    assert not is_valid_barton_id("04.04.01.00.0002.092")
    assert not is_valid_barton_id("")
