"""Apify: start an actor run that looks for a company's contacts; its results come back later.

`POST {base}/v2/acts/{actor_id}/runs` with `Authorization: Bearer TOKEN` and the run's input
as the JSON body: `company_name`, `domain`, `country`, `roles`, `slot_ids`, `callback_url`,
and the process key (`unique_id`, `process_id`: seed 000's Contact Enrichment step) for the
actor to echo. Apify answers `{"data": {"id": ..., "status": ...}}` at once (201), which
becomes a StartedRun; the slots then wait for the webhook.

Two things may come back to `callback_url` (POST /webhooks/apify):

- The actor itself, when it is done, POSTs seed 000's `scrape_done` payload:
  `{"event": "scrape_done", "payload": {"slot_ids": [...], "contacts": [...], "run_id":
  "...", "unique_id": ..., "process_id": ...}}`, each contact carrying its `slot_id`,
  `full_name`, `first_name`, `last_name`, `title`, `email`, `linkedin_url`, `country` and
  `confidence`. Apify cannot produce that body, so the actor must send it.
- Apify, if the run fails, times out or is aborted, delivers the ad-hoc webhook registered
  with the run (the `webhooks` query parameter, base64 JSON), whose template makes it seed
  000's `{"event": "scrape_failed", "payload": {"slot_ids": [...], "run_id": ..., "status":
  ..., "event_type": ..., "unique_id": ..., "process_id": ...}}`, so the pipeline need not
  wait for its own timeout. Its `idempotencyKey` lets Apify refuse to register it twice for
  a retried start.

Cost: `cost_per_call` per started run, an estimate of the run's compute.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from providers.base import ContactQuery, Mode, StartedRun
from providers.http import Channel, Client

NAME = "apify"
DEFAULT_BASE_URL = "https://api.apify.com"
# Our own actor, published under the account the token belongs to; `~` is how Apify's URLs
# write the `/` between user and actor name.
DEFAULT_ACTOR_ID = "cascade~contact-finder"
DEFAULT_COST_PER_CALL = Decimal("0.05")
FAILURE_EVENTS = ("ACTOR.RUN.FAILED", "ACTOR.RUN.TIMED_OUT", "ACTOR.RUN.ABORTED")

# Seed 000's process key for Contact Enrichment (marketing.shq_process_key_reference).
DEFAULT_UNIQUE_ID = "04.01.01.04.20000.004"
DEFAULT_PROCESS_ID = "PLE-001"

# Apify's own template language: each {{...}} becomes a JSON value when Apify delivers; the
# placeholders in <angle brackets> are ours, filled per run before the spec is encoded.
FAILED_PAYLOAD_TEMPLATE = (
    '{"event": "scrape_failed", "payload": {"slot_ids": <slot_ids>, '
    '"run_id": {{resource.id}}, "status": {{resource.status}}, "event_type": {{eventType}}, '
    '"unique_id": <unique_id>, "process_id": <process_id>}}'
)


class _Run(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    status: str | None = None


class _Started(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: _Run


@dataclass(frozen=True, slots=True)
class ProcessKey:
    unique_id: str = DEFAULT_UNIQUE_ID
    process_id: str = DEFAULT_PROCESS_ID


def run_input(
    query: ContactQuery, slot_ids: tuple[int, ...], webhook_url: str, key: ProcessKey
) -> dict[str, Any]:
    return {
        "company_name": query.company_name,
        "domain": query.domain,
        "country": query.country,
        "roles": [query.role],
        "slot_ids": list(slot_ids),
        "callback_url": webhook_url,
        "unique_id": key.unique_id,
        "process_id": key.process_id,
    }


def failure_webhooks(
    slot_ids: tuple[int, ...], webhook_url: str, idempotency_key: str, key: ProcessKey
) -> str:
    """The `webhooks` query parameter: base64 of a JSON list of ad-hoc webhook specs."""
    template = (
        FAILED_PAYLOAD_TEMPLATE.replace("<slot_ids>", json.dumps(list(slot_ids)))
        .replace("<unique_id>", json.dumps(key.unique_id))
        .replace("<process_id>", json.dumps(key.process_id))
    )
    spec = [
        {
            "eventTypes": list(FAILURE_EVENTS),
            "requestUrl": webhook_url,
            "payloadTemplate": template,
            "idempotencyKey": f"{idempotency_key}:failed",
        }
    ]
    return base64.b64encode(json.dumps(spec).encode()).decode("ascii")


class Apify(Client):
    """A RunStarter over Apify's actor runs."""

    def __init__(
        self,
        channel: Channel,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        actor_id: str = DEFAULT_ACTOR_ID,
        cost_per_call: Decimal = DEFAULT_COST_PER_CALL,
        mode: Mode = "live",
        process_key: ProcessKey = ProcessKey(),
    ) -> None:
        actor = quote(actor_id.replace("/", "~"), safe="~")
        url = f"{base_url.rstrip('/')}/v2/acts/{actor}/runs"
        super().__init__(NAME, channel, api_key=api_key, url=url, cost_per_call=cost_per_call,
                         mode=mode)  # fmt: skip
        self._key = process_key

    async def start_run(
        self,
        query: ContactQuery,
        *,
        slot_ids: tuple[int, ...],
        webhook_url: str,
        idempotency_key: str,
    ) -> StartedRun:
        request = self._channel.client.build_request(
            "POST",
            self._url,
            params={
                "webhooks": failure_webhooks(slot_ids, webhook_url, idempotency_key, self._key)
            },
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Idempotency-Key": idempotency_key,
            },
            json=run_input(query, slot_ids, webhook_url, self._key),
        )
        exchange = await self._channel.send(request)
        started = self._channel.parse(exchange.response, _Started)
        return StartedRun(
            self.name, self.mode, started.data.id, self.cost_per_call, exchange.latency_ms
        )
