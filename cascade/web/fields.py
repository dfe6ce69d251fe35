"""Pydantic field types shared by the webhook bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

BIGINT_MAX = 2**63 - 1  # our ids are Postgres bigints


def _numeric_id(prefix: str) -> BeforeValidator:
    """Accepts 123, "123" and "<prefix>123" (seed 000 writes ids all three ways)."""

    def parse(value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be an integer id, not a boolean")  # bool is an int subclass
        if isinstance(value, str):
            digits = value.strip().removeprefix(prefix)
            if not (digits.isascii() and digits.isdigit()):
                raise ValueError(f"must be an integer or '{prefix}<integer>'")
            return int(digits)
        return value

    return BeforeValidator(parse)


def _blank_is_none(value: object) -> object:
    return (value.strip() or None) if isinstance(value, str) else value


SlotId = Annotated[int, _numeric_id("slot_"), Field(gt=0, le=BIGINT_MAX)]
PersonId = Annotated[int, _numeric_id("person_"), Field(gt=0, le=BIGINT_MAX)]
# Providers send "" for "nothing"; we store NULL.
OptionalText = Annotated[str | None, BeforeValidator(_blank_is_none)]
