"""Field types and number parsing shared by the request bodies, query strings and settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import BeforeValidator, Field

BIGINT_MAX = 2**63 - 1  # our ids are Postgres bigints


def whole_number(text: str) -> int | None:
    """`text` as a non-negative integer when it is one written in ASCII digits, else None.
    (str.isdigit() is true for "²" and "①", which int() refuses.)"""
    return int(text) if text.isascii() and text.isdigit() else None


def positive_setting(environ: Mapping[str, str], name: str, default: int) -> int:
    """The whole number of at least 1 in `environ[name]`, `default` when it is unset or blank;
    ValueError naming the variable otherwise (read at startup: a bad setting stops the app)."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    number = whole_number(text)
    if number is None or number < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {text!r}")
    return number


def _numeric_id(prefix: str) -> BeforeValidator:
    """Accepts 123, "123" and "<prefix>123" (seed 000 writes ids all three ways)."""

    def parse(value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be an integer id, not a boolean")  # bool is an int subclass
        if isinstance(value, str):
            number = whole_number(value.strip().removeprefix(prefix))
            if number is None:
                raise ValueError(f"must be an integer or '{prefix}<integer>'")
            return number
        return value

    return BeforeValidator(parse)


def _blank_is_none(value: object) -> object:
    return (value.strip() or None) if isinstance(value, str) else value


SlotId = Annotated[int, _numeric_id("slot_"), Field(gt=0, le=BIGINT_MAX)]
PersonId = Annotated[int, _numeric_id("person_"), Field(gt=0, le=BIGINT_MAX)]
MessageId = Annotated[int, _numeric_id("msg_"), Field(gt=0, le=BIGINT_MAX)]
# Providers send "" for "nothing"; we store NULL.
OptionalText = Annotated[str | None, BeforeValidator(_blank_is_none)]
# A provider's id of something we index (UNIQUE keys, lookups): bounded, as a btree entry is.
ProviderId = Annotated[
    Annotated[str, Field(max_length=200)] | None, BeforeValidator(_blank_is_none)
]
