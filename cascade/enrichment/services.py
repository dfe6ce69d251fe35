"""What Phase 1's handlers share for the life of a listener: the settings and the provider
clients (one httpx client each, opened at start and closed at stop). A handler reaches it
with `deps.resource(Enrichment)`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cascade.enrichment.settings import EnrichmentSettings
from providers import ProviderSet, open_providers


@dataclass(frozen=True, slots=True)
class Enrichment:
    settings: EnrichmentSettings
    providers: ProviderSet


@contextlib.asynccontextmanager
async def open_enrichment() -> AsyncIterator[Enrichment]:
    settings = EnrichmentSettings.from_env(os.environ)
    async with open_providers(os.environ) as providers:
        yield Enrichment(settings, providers)
