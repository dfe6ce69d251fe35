"""The production handler registry: one module per event type, listed explicitly, and the
resources they share (Phase 1's settings and provider clients).

Phase 1 (enrichment) is built, and of Phase 3 the timeline steps of email_opened,
email_clicked and reply_received; the other messaging and engagement stages land here as their
issues are built. Until a type has a handler, its events end as dead letters that say so
(`cascade dlq replay` brings them back once the handler exists).
"""

from __future__ import annotations

from cascade.enrichment.services import open_enrichment
from cascade.handling import Registry
from handlers import (
    company_created,
    company_promoted,
    company_validated,
    contact_enriched,
    email_clicked,
    email_opened,
    email_verified,
    reply_received,
    slots_created,
)

REGISTRY = Registry(
    (
        company_created,
        company_validated,
        company_promoted,
        slots_created,
        contact_enriched,
        email_verified,
        email_opened,
        email_clicked,
        reply_received,
    ),
    resources=(open_enrichment,),
)
