"""Seed 001's campaign API (cascade/web/campaigns.py) over real HTTP against a real database:
create, list, get, run, runs, pause, resume, archive and stats, with viewer and ops tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from cascade.web.auth import create_token
from cascade.web.campaigns import CAMPAIGN_STATUSES, RUN_STATUSES
from tests.web.conftest import StartServer

# Roomy enough that no test here meets the rate limit (tests/web/test_auth.py covers it).
NO_LIMIT = {"CASCADE_RATE_LIMIT_PER_MINUTE": "6000", "CASCADE_RATE_LIMIT_BURST": "1000"}
WEEKLY: dict[str, Any] = {
    "campaign_name": "Weekly Restaurant Outreach",
    "description": "Generate and contact 20 restaurants every Monday",
    "schedule_cron": "0 9 * * MON",
    "timezone": "America/New_York",
    "budget_daily": 5.0,
    "budget_weekly": 20,
    "budget_monthly": 80.5,
    "config": {"steps": [{"name": "prospecting", "engine": "prospecting"}]},
}
RUNS_IN_DB = "SELECT status, trigger, requested_by FROM marketing.campaign_runs WHERE id = $1"
INSERT_CAMPAIGN = """
    INSERT INTO marketing.campaigns (campaign_name, status, paused_at)
    VALUES ('check', $1, CASE WHEN $1 = 'paused' THEN now() END) RETURNING id
"""
INSERT_RUN = """
    INSERT INTO marketing.campaign_runs
        (campaign_id, status, trigger, requested_by, started_at, finished_at)
    VALUES ($1, $2, 'manual', 'test',
            CASE WHEN $2 <> 'queued' THEN now() END,
            CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN now() END)
"""


@dataclass(frozen=True)
class Api:
    http: httpx.AsyncClient
    viewer: dict[str, str]
    ops: dict[str, str]

    async def create(self, **overrides: Any) -> dict[str, Any]:
        response = await self.http.post("/api/campaigns", json=WEEKLY | overrides, headers=self.ops)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def stored_run(db: asyncpg.Connection, run_id: int) -> tuple[Any, ...]:
    row = await db.fetchrow(RUNS_IN_DB, run_id)
    assert row is not None
    return tuple(row)


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return dict(body["error"])


@pytest.fixture
async def api(start_server: StartServer, db: asyncpg.Connection) -> AsyncIterator[Api]:
    viewer = await create_token(db, "dashboard", "viewer", "test")
    ops = await create_token(db, "operator", "ops", "test")
    async with httpx.AsyncClient(base_url=start_server(NO_LIMIT), timeout=30) as http:
        yield Api(http, bearer(viewer), bearer(ops))


# -- create, list, get -------------------------------------------------------------------------


async def test_create__ops_creates_and_a_viewer_reads_it_back(api: Api) -> None:
    response = await api.http.post("/api/campaigns", json=WEEKLY, headers=api.ops)

    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"/api/campaigns/{created['id']}"
    assert created | {"id": 0, "created_at": "", "updated_at": "", "next_run_at": ""} == {
        "id": 0, "campaign_name": WEEKLY["campaign_name"], "description": WEEKLY["description"],
        "status": "active", "schedule_cron": "0 9 * * MON", "timezone": "America/New_York",
        "schedule_enabled": True, "next_run_at": "", "last_run_at": None,
        "budget_daily": 5.0, "budget_weekly": 20.0, "budget_monthly": 80.5,
        "budget_currency": "USD", "config": WEEKLY["config"], "created_by": "operator",
        "created_at": "", "updated_at": "", "paused_at": None, "paused_reason": None,
        "completed_at": None,
    }  # fmt: skip
    got = await api.http.get(f"/api/campaigns/{created['id']}", headers=api.viewer)
    listed = await api.http.get("/api/campaigns", headers=api.viewer)
    assert got.status_code == 200
    assert got.json() == created
    assert listed.json() == {"campaigns": [created], "total": 1, "limit": 50, "offset": 0,
                             "status": None}  # fmt: skip


async def test_create__next_run_at_is_the_next_fire_in_the_campaigns_timezone(api: Api) -> None:
    weekly = await api.create()
    seconds = await api.create(schedule_cron="30 0 9 * * MON", timezone="Asia/Kolkata")
    unscheduled = await api.create(schedule_cron=None)
    disabled = await api.create(schedule_enabled=False)

    new_york = datetime.fromisoformat(weekly["next_run_at"]).astimezone(
        ZoneInfo(WEEKLY["timezone"])
    )
    kolkata = datetime.fromisoformat(seconds["next_run_at"]).astimezone(ZoneInfo("Asia/Kolkata"))
    assert new_york > datetime.now(UTC)
    assert (new_york.weekday(), new_york.hour, new_york.minute) == (0, 9, 0)
    assert (kolkata.weekday(), kolkata.hour, kolkata.minute, kolkata.second) == (0, 9, 0, 30)
    assert unscheduled["next_run_at"] is None
    assert disabled["next_run_at"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schedule_cron": "every monday"}, "schedule_cron"),
        ({"schedule_cron": "61 9 * * MON"}, "schedule_cron"),
        ({"schedule_cron": "0 0 30 2 *"}, "schedule_cron"),  # 30 February never comes
        ({"schedule_cron": "H 9 * * *"}, "schedule_cron"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"campaign_name": "   "}, "campaign_name"),
        ({"campaign_name": None}, "campaign_name"),
        ({"budget_daily": -1}, "budget_daily"),
        ({"budget_weekly": 1.005}, "budget_weekly"),
        ({"budget_currency": "dollars"}, "budget_currency"),
        ({"schedule": {"cron": "0 9 * * MON"}}, "schedule"),
    ],
    ids=["cron-words", "cron-range", "cron-never", "cron-hashed", "timezone", "timezone-host",
         "name-blank", "name-null", "budget-negative", "budget-cents", "currency", "unknown-field"],
)  # fmt: skip
async def test_create__bad_input_is_422_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    response = await api.http.post("/api/campaigns", json=WEEKLY | change, headers=api.ops)

    assert response.status_code == 422
    problem = error(response)
    assert problem["code"] == "invalid_payload"
    assert [e["field"] for e in problem["details"]["errors"]] == [field]
    assert problem["message"].startswith(f"{field}: ")


async def test_create__a_missing_name_or_a_body_that_is_not_json(api: Api) -> None:
    missing = await api.http.post("/api/campaigns", json={}, headers=api.ops)
    garbled = await api.http.post(
        "/api/campaigns", content=b"{", headers=api.ops | {"content-type": "application/json"}
    )

    assert missing.status_code == 422
    assert error(missing)["details"]["errors"][0]["field"] == "campaign_name"
    assert garbled.status_code == 400
    assert error(garbled)["code"] == "malformed_json"


async def test_list__filters_by_status_and_pages_newest_first(api: Api) -> None:
    first, second, third = [await api.create(campaign_name=f"c{n}") for n in range(3)]
    await api.http.post(f"/api/campaigns/{second['id']}/pause", headers=api.ops)

    paused = await api.http.get("/api/campaigns?status=paused", headers=api.viewer)
    page = await api.http.get("/api/campaigns?limit=1&offset=1", headers=api.viewer)

    assert [c["id"] for c in paused.json()["campaigns"]] == [second["id"]]
    assert paused.json()["total"] == 1
    assert [c["id"] for c in page.json()["campaigns"]] == [second["id"]]
    assert (page.json()["total"], page.json()["limit"], page.json()["offset"]) == (3, 1, 1)
    assert first["id"] < second["id"] < third["id"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=running", "status"), ("limit=0", "limit"), ("limit=501", "limit"),
     ("offset=-1", "offset"), ("limit=ten", "limit")],
)  # fmt: skip
async def test_list__a_bad_query_is_422_naming_the_parameter(
    api: Api, query: str, field: str
) -> None:
    response = await api.http.get(f"/api/campaigns?{query}", headers=api.viewer)

    assert response.status_code == 422
    assert [e["field"] for e in error(response)["details"]["errors"]] == [field]


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [("GET", "", "viewer"), ("GET", "/runs", "viewer"), ("POST", "/run", "ops"),
     ("POST", "/pause", "ops"), ("POST", "/resume", "ops"), ("DELETE", "", "ops")],
)  # fmt: skip
@pytest.mark.parametrize("campaign_id", [404404, 2**63])
async def test_campaign_routes__an_unknown_id_is_404_in_the_envelope(
    api: Api, method: str, path: str, role: str, campaign_id: int
) -> None:
    headers = api.viewer if role == "viewer" else api.ops
    response = await api.http.request(
        method, f"/api/campaigns/{campaign_id}{path}", headers=headers
    )

    assert response.status_code == 404
    assert error(response) == {
        "code": "campaign_not_found",
        "message": f"no campaign {campaign_id}",
        "details": {"campaign_id": campaign_id},
    }


# -- transitions -------------------------------------------------------------------------------


async def test_pause_and_resume__move_the_campaign_and_refuse_the_wrong_way_with_409(
    api: Api,
) -> None:
    campaign = await api.create()
    url = f"/api/campaigns/{campaign['id']}"

    paused = await api.http.post(f"{url}/pause", json={"reason": "budget review"}, headers=api.ops)
    paused_again = await api.http.post(f"{url}/pause", headers=api.ops)
    resumed = await api.http.put(f"{url}/resume", headers=api.ops)  # seed 001's verb
    resumed_again = await api.http.post(f"{url}/resume", headers=api.ops)

    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert paused.json()["paused_reason"] == "budget review"
    assert paused.json()["paused_at"] is not None
    assert paused.json()["next_run_at"] is None
    assert paused_again.status_code == 409
    assert error(paused_again) == {
        "code": "invalid_transition",
        "message": "cannot pause a campaign that is paused",
        "details": {"campaign_id": campaign["id"], "action": "pause", "status": "paused",
                    "allowed_from": ["active"]},
    }  # fmt: skip
    assert resumed.status_code == 200
    body = resumed.json()
    assert (body["status"], body["paused_at"], body["paused_reason"]) == ("active", None, None)
    assert body["next_run_at"] is not None
    assert resumed_again.status_code == 409
    assert error(resumed_again)["details"]["status"] == "active"
    assert error(resumed_again)["message"] == "cannot resume a campaign that is active"


async def test_delete__archives_keeps_the_runs_and_answers_again_with_the_same_row(
    api: Api, db: asyncpg.Connection
) -> None:
    campaign = await api.create()
    url = f"/api/campaigns/{campaign['id']}"
    await api.http.post(f"{url}/pause", headers=api.ops)
    await api.http.post(f"{url}/resume", headers=api.ops)
    run = (await api.http.post(f"{url}/run", headers=api.ops)).json()["run"]
    await api.http.post(f"{url}/pause", headers=api.ops)

    archived = await api.http.delete(url, headers=api.ops)
    again = await api.http.delete(url, headers=api.ops)
    runs = await api.http.get(f"{url}/runs", headers=api.viewer)

    assert archived.status_code == 200
    body = archived.json()
    assert (body["status"], body["paused_at"], body["next_run_at"]) == ("archived", None, None)
    assert again.status_code == 200
    assert again.json() == body
    assert [r["id"] for r in runs.json()["runs"]] == [run["id"]]
    # Kept as history; the pause cancelled it, since a paused campaign runs nothing.
    assert await stored_run(db, run["id"]) == ("cancelled", "manual", "operator")


@pytest.mark.parametrize(("method", "action"), [("POST", "pause"), ("POST", "resume"),
                                               ("POST", "run")])  # fmt: skip
async def test_archived__cannot_be_paused_resumed_or_run(
    api: Api, method: str, action: str
) -> None:
    campaign = await api.create()
    await api.http.delete(f"/api/campaigns/{campaign['id']}", headers=api.ops)

    response = await api.http.request(
        method, f"/api/campaigns/{campaign['id']}/{action}", headers=api.ops
    )

    assert response.status_code == 409
    assert error(response)["details"]["status"] == "archived"
    assert error(response)["message"] == f"cannot {action} a campaign that is archived"


# -- runs --------------------------------------------------------------------------------------


async def test_run__records_a_queued_manual_run_that_runs_lists(
    api: Api, db: asyncpg.Connection
) -> None:
    campaign = await api.create()
    url = f"/api/campaigns/{campaign['id']}"

    response = await api.http.post(
        f"{url}/run", headers=api.ops | {"x-correlation-id": "run-req-1"}
    )
    runs = await api.http.get(f"{url}/runs", headers=api.viewer)

    assert response.status_code == 202
    body = response.json()
    assert body["executed"] is False
    assert "not executed" in body["note"]
    run = body["run"]
    assert run | {"id": 0, "created_at": ""} == {
        "id": 0, "campaign_id": campaign["id"], "status": "queued", "trigger": "manual",
        "requested_by": "operator", "started_at": None, "finished_at": None,
        "detail": {"correlation_id": "run-req-1"}, "created_at": "",
    }  # fmt: skip
    assert await stored_run(db, run["id"]) == ("queued", "manual", "operator")
    assert runs.json() == {"campaign_id": campaign["id"], "runs": [run], "total": 1,
                           "limit": 50, "offset": 0}  # fmt: skip


async def test_run__refused_while_paused_and_while_another_run_is_open(api: Api) -> None:
    campaign = await api.create()
    url = f"/api/campaigns/{campaign['id']}"
    first = await api.http.post(f"{url}/run", headers=api.ops)

    second = await api.http.post(f"{url}/run", headers=api.ops)
    await api.http.post(f"{url}/pause", headers=api.ops)
    while_paused = await api.http.post(f"{url}/run", headers=api.ops)

    assert second.status_code == 409
    assert error(second) == {
        "code": "run_already_open",
        "message": f"campaign {campaign['id']} already has a run queued or running",
        "details": {"campaign_id": campaign["id"], "run_id": first.json()["run"]["id"],
                    "run_status": "queued"},
    }  # fmt: skip
    assert while_paused.status_code == 409
    assert error(while_paused)["details"]["status"] == "paused"


async def test_run__twenty_concurrent_requests_queue_exactly_one_run(
    api: Api, db: asyncpg.Connection
) -> None:
    campaign = await api.create()
    url = f"/api/campaigns/{campaign['id']}/run"

    answers = await asyncio.gather(*(api.http.post(url, headers=api.ops) for _ in range(20)))

    assert sorted(r.status_code for r in answers) == [202] + [409] * 19
    count = "SELECT count(*) FROM marketing.campaign_runs WHERE campaign_id = $1"
    assert await db.fetchval(count, campaign["id"]) == 1


# -- access ------------------------------------------------------------------------------------


CHANGES = [("POST", "/api/campaigns"), ("POST", "/api/campaigns/{id}/run"),
           ("POST", "/api/campaigns/{id}/pause"), ("PUT", "/api/campaigns/{id}/resume"),
           ("DELETE", "/api/campaigns/{id}")]  # fmt: skip
READS = [("GET", "/api/campaigns"), ("GET", "/api/campaigns/{id}"),
         ("GET", "/api/campaigns/{id}/runs"), ("GET", "/api/stats")]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), CHANGES + READS)
async def test_access__every_route_is_401_without_a_token(api: Api, method: str, path: str) -> None:
    campaign = await api.create()

    response = await api.http.request(method, path.format(id=campaign["id"]), json=WEEKLY)

    assert response.status_code == 401
    assert error(response)["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), CHANGES)
async def test_access__a_viewer_changing_anything_is_403_and_nothing_changes(
    api: Api, method: str, path: str
) -> None:
    campaign = await api.create()

    response = await api.http.request(
        method, path.format(id=campaign["id"]), json=WEEKLY, headers=api.viewer
    )
    after = await api.http.get("/api/stats", headers=api.viewer)

    assert response.status_code == 403
    assert error(response)["details"] == {"required_role": "ops", "role": "viewer"}
    assert after.json()["campaigns"]["total"] == 1
    assert after.json()["campaigns"]["by_status"]["active"] == 1
    assert after.json()["runs"]["total"] == 0


# -- stats -------------------------------------------------------------------------------------


async def test_stats__counts_campaigns_and_runs_by_status_beside_pipeline_health(api: Api) -> None:
    active, paused, _ = [await api.create(campaign_name=f"c{n}") for n in range(3)]
    await api.http.post(f"/api/campaigns/{paused['id']}/pause", headers=api.ops)
    await api.http.post(f"/api/campaigns/{active['id']}/run", headers=api.ops)

    response = await api.http.get("/api/stats", headers=api.viewer)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"campaigns", "runs", "pipeline_health"}
    assert body["campaigns"] == {
        "total": 3,
        "by_status": {"draft": 0, "active": 2, "paused": 1, "completed": 0, "archived": 0},
    }
    assert body["runs"] == {
        "total": 1,
        "by_status": {"queued": 1, "running": 0, "completed": 0, "failed": 0, "cancelled": 0},
    }
    health = body["pipeline_health"]
    assert {"measured_at", "pending", "dead_letters", "critical_alerts"} <= set(health)
    assert health["pending"] == 0
    datetime.fromisoformat(health["measured_at"])


async def test_statuses__the_python_lists_name_exactly_what_sql_accepts(
    db: asyncpg.Connection,
) -> None:
    for status in CAMPAIGN_STATUSES:
        await db.fetchval(INSERT_CAMPAIGN, status)
    for run_status in RUN_STATUSES:  # one campaign each: a campaign has at most one open run
        await db.execute(INSERT_RUN, await db.fetchval(INSERT_CAMPAIGN, "active"), run_status)

    with pytest.raises(asyncpg.CheckViolationError, match="campaigns_status_check"):
        await db.fetchval(INSERT_CAMPAIGN, "running")
    with pytest.raises(asyncpg.CheckViolationError, match="campaign_runs_status_check"):
        await db.execute(INSERT_RUN, await db.fetchval(INSERT_CAMPAIGN, "active"), "done")
