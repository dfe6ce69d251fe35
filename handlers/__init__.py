"""The production handler registry: one module per event type, listed explicitly.

The enrichment, messaging and engagement stages land here as their issues are built; until a
type has a handler, its events end as dead letters that say so (`cascade dlq replay` brings
them back once the handler exists).
"""

from __future__ import annotations

from cascade.handling import Registry

REGISTRY = Registry(())
