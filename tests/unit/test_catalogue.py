"""The README's event catalogue lists every event type the database knows, and says for each
whether its handler exists."""

from __future__ import annotations

import re

from cascade.database import PROJECT_ROOT
from handlers import REGISTRY

EVENT_TYPES_INSERT = re.compile(r"INSERT INTO marketing\.event_types .*? VALUES(.*?);", re.DOTALL)


def catalogue_rows() -> dict[str, str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## Event catalogue") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", section, re.MULTILINE)
    return {event_type: handler.strip() for event_type, handler in rows}


def sql_event_types() -> set[str]:
    core = (PROJECT_ROOT / "schema" / "0001.engine-core.sql").read_text()
    match = EVENT_TYPES_INSERT.search(core)
    assert match
    return set(re.findall(r"\('(\w+)',", match.group(1)))


def test_catalogue__lists_every_event_type_of_the_schema() -> None:
    assert set(catalogue_rows()) == sql_event_types()


def test_catalogue__names_the_handler_of_every_type_that_has_one() -> None:
    rows = catalogue_rows()

    for handler in REGISTRY:
        assert handler.module in rows[handler.event_type], handler.event_type
    for event_type, cell in rows.items():
        if REGISTRY.get(event_type) is None:
            assert cell == "not built yet", event_type
