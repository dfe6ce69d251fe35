"""Barton IDs: how to read and check one (marketing.next_barton_id() issues them).

`04.04.01.BB.NNNNN.CCC`: the outreach domain (04, as seed 000's process keys), the entity
(04, company), the scheme version (01), the company's serial split into a block BB and a number
NNNNN, and CCC, an ISO 7064 MOD 97-10 check on the serial, which catches any single mistyped
digit and most swapped pairs.
"""

from __future__ import annotations

import re

_BARTON_ID = re.compile(r"04\.04\.01\.(\d{2})\.(\d{5})\.(\d{3})")


def check_digits(serial: int) -> int:
    return 98 - (serial * 100) % 97


def serial_of(barton_id: str) -> int | None:
    """The serial a well-formed, correctly checked Barton ID carries; None otherwise."""
    match = _BARTON_ID.fullmatch(barton_id)
    if match is None:
        return None
    block, number, check = (int(part) for part in match.groups())
    serial = block * 100_000 + number
    return serial if check == check_digits(serial) else None


def is_valid_barton_id(barton_id: str) -> bool:
    return serial_of(barton_id) is not None
