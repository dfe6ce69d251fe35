"""The dashboard page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): signed in with an ops or a viewer token against the real app on a database that
Phase 1 ran through (sandbox providers), plus a dead letter and a firing alert. The page must
show the database's numbers, the alert, the dead letter with a Replay button that works (ops
only), a company's timeline, and no console error, page error or failed request. A full-page
screenshot is kept in tests/artifacts/dashboard.png (git-ignored) for a person to look at."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Response, Route, async_playwright

from cascade.web.auth import create_token
from handlers import REGISTRY
from tests.support.listening import drain
from tests.web.conftest import running_server

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches for the network on its own.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard.png"
WAIT_MS = 20_000

COMPANIES = [
    ("Northwind Logistics GmbH", "https://www.northwind-logistics.de", "DE"),
    ("Bluefin Analytics", "bluefin-analytics.io", "US"),
    ("Lumen Robotics", "https://lumenrobotics.com", "US"),
    ("Harbour & Vale Ltd", "http://harbourvale.co.uk/about", "GB"),
]
INSERT_INTAKE = """
    INSERT INTO intake.company_raw_intake (company_name, website, country)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
"""
# A verification that gave up: the kind of dead letter an operator replays once fixed.
ADD_DEAD_LETTER = """
    INSERT INTO marketing.pipeline_events
        (event_type, status, outcome, attempts, record_id, payload, last_error, finished_at)
    SELECT 'contact_enriched', 'dead', 'dead', 5, ct.id, jsonb_build_object('id', ct.id),
           'ProviderFault: MillionVerifier answered result=error (no credits left)', now()
      FROM marketing.contact_enrichment AS ct ORDER BY ct.id LIMIT 1
    RETURNING id
"""
# "Pipeline stalled" fires for any event due and unclaimed for 5 minutes: one such event.
STALL = """
    UPDATE marketing.shq_guardrails SET limit_value = 0
     WHERE guardrail_key = 'alert_pipeline_stalled';
    INSERT INTO marketing.pipeline_events (event_type, run_after, created_at)
    VALUES ('follow_up_due', now() - interval '20 minutes', now() - interval '20 minutes');
"""
STAGE_COUNTS = """
    SELECT (SELECT count(*) FROM intake.company_raw_intake) AS intake_rows,
           (SELECT count(*) FROM marketing.company_master) AS validated,
           (SELECT count(*) FROM marketing.company_master WHERE barton_id IS NOT NULL) AS promoted,
           (SELECT count(*) FROM marketing.company_slots WHERE status = 'filled') AS slots_filled,
           (SELECT count(*) FROM marketing.email_verification WHERE verdict = 'deliverable')
               AS verified,
           (SELECT count(*) FROM marketing.contact_enrichment WHERE status = 'ready') AS ready,
           (SELECT count(*) FROM marketing.message_queue) AS messages_queued,
           (SELECT count(*) FROM marketing.responses) AS replied
"""


@dataclass
class Troubles:
    """Everything the page should never do: console errors, uncaught errors, failed or
    refused requests."""

    seen: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: self.seen.append(f"failed: {request.url}"))
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"console error: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.seen.append(f"HTTP {response.status}: {response.url}")


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's browser test needs Debian's chromium "
            "(apt-get install chromium); Playwright's own browser download is never used"
        )
    return CHROMIUM


@pytest.fixture(autouse=True)
def sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PEOPLEDATALABS_API_KEY", "PROSPEO_API_KEY", "APIFY_TOKEN",
                "MILLIONVERIFIER_API_KEY"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ENRICHMENT_PROVIDERS", "peopledatalabs,prospeo")
    monkeypatch.setenv("VERIFICATION_UNKNOWN_RETRY_SECONDS", "0.1")


@pytest.fixture
async def seeded(db: asyncpg.Connection, database_url: str) -> int:
    """Phase 1 run through for COMPANIES, then a dead letter and a stalled event; returns the
    dead letter's id."""
    names, websites, countries = (list(column) for column in zip(*COMPANIES, strict=True))
    await db.execute(INSERT_INTAKE, names, websites, countries)
    await drain(database_url, REGISTRY)
    dead_letter: int = await db.fetchval(ADD_DEAD_LETTER)
    await db.execute(STALL)
    return dead_letter


@pytest.fixture
def app_url(database_url: str, seeded: int) -> Iterator[str]:
    with running_server(database_url, {}) as url:
        yield url


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def signed_in(
    browser: Browser, app_url: str, token: str
) -> AsyncIterator[tuple[Page, Troubles]]:
    """The page, signed in with `token`, once every section has rendered."""
    page = await browser.new_page(viewport={"width": 1360, "height": 900})
    page.set_default_timeout(WAIT_MS)
    troubles = Troubles()
    troubles.watch(page)
    try:
        await page.goto(app_url + "/")
        await page.fill("#token", token)
        await page.click("#signin-form button[type=submit]")
        for section in ("#health", "#funnel", "#alerts", "#throughput", "#dead-letters"):
            await page.wait_for_selector(f"{section}[data-state=ready]")
        yield page, troubles
    finally:
        await page.close()


async def shown_count(page: Page, stage: str) -> int:
    text = await page.inner_text(f'#funnel [data-stage="{stage}"] .count')
    return int(text.replace(",", ""))


# -- the tests ---------------------------------------------------------------------------------


async def test_dashboard__an_operator_sees_the_pipeline_and_replays_a_dead_letter(
    browser: Browser, app_url: str, db: asyncpg.Connection, seeded: int
) -> None:
    ops = await create_token(db, "Dana (sales ops)", "ops", "test")

    async with signed_in(browser, app_url, ops) as (page, troubles):
        counts = dict(await db.fetchrow(STAGE_COUNTS) or {})
        assert {stage: await shown_count(page, stage) for stage in counts} == counts
        assert "not built yet" in await page.inner_text('#funnel [data-phase="messaging"] h3')
        assert "pipeline stalled" in await page.inner_text(
            '#alerts [data-alert="pipeline_stalled"]'
        )
        await page.wait_for_selector("#throughput-chart svg rect")  # processed events, drawn
        assert await page.locator("#latency .mini").count() == 6  # one per Phase 1 stage

        await page.fill("#timeline-key", "bluefin-analytics.io")
        await page.click("#timeline-form button[type=submit]")
        await page.wait_for_selector("#timeline-result[data-state=ready]")
        events = await page.eval_on_selector_all(
            "#timeline-result .entry.event", "items => items.map(i => i.dataset.kind)"
        )
        assert events[:4] == ["company_created", "company_validated", "company_promoted",
                              "slots_created"]  # fmt: skip
        assert "Bluefin Analytics" in await page.inner_text("#timeline-result .subject")

        row = page.locator(f'#dead-letters [data-event-id="{seeded}"]')
        assert "MillionVerifier answered result=error" in await row.inner_text()
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

        await row.locator("button.replay").click()
        await page.wait_for_selector("#dead-letters .flash.ok")
        await page.wait_for_selector(f'#dead-letters [data-event-id="{seeded}"]', state="detached")

        status = await db.fetchval(
            "SELECT status FROM marketing.pipeline_events WHERE id = $1", seeded
        )
        assert status == "pending"
        assert troubles.seen == []


async def test_dashboard__a_viewer_sees_dead_letters_but_no_replay_button(
    browser: Browser, app_url: str, db: asyncpg.Connection, seeded: int
) -> None:
    viewer = await create_token(db, "Vera (viewer)", "viewer", "test")

    async with signed_in(browser, app_url, viewer) as (page, troubles):
        assert await page.locator(f'#dead-letters [data-event-id="{seeded}"]').count() == 1
        assert await page.locator("#dead-letters button.replay").count() == 0
        assert "needs the ops role" in await page.inner_text("#dead-letters")
        assert "viewer" in await page.inner_text("#who")
        assert troubles.seen == []


async def test_dashboard__a_slow_day_read_never_replaces_the_hour_chosen_after_it(
    browser: Browser, app_url: str, db: asyncpg.Connection
) -> None:
    # The day's read is the slow one (half a second on a busy pipeline): a person who picks
    # "Last 24 hours" and then "Last hour" before it answers must keep seeing the hour.
    viewer = await create_token(db, "Vera (viewer)", "viewer", "test")
    day_asked, release_day = asyncio.Event(), asyncio.Event()

    async def hold(route: Route) -> None:
        day_asked.set()
        await release_day.wait()
        await route.continue_()

    async with signed_in(browser, app_url, viewer) as (page, troubles):
        await page.route("**/api/dashboard/throughput?window=24h", hold)
        await page.click('#throughput [data-window="24h"]')
        await asyncio.wait_for(day_asked.wait(), WAIT_MS / 1000)
        await mark_throughput_unread(page)
        await page.click('#throughput [data-window="1h"]')
        await page.wait_for_selector("#throughput[data-state=ready]")  # the hour, drawn

        await page.evaluate(SIGNAL_AFTER_READING, "/api/dashboard/throughput?window=24h")
        release_day.set()
        await page.wait_for_function("() => window.answerHandled")

        title = await page.text_content("#throughput-title")
        assert title == "Events processed per minute"
        assert await page.get_attribute('[data-window="1h"]', "aria-pressed") == "true"
        assert troubles.seen == []


async def test_dashboard__a_slow_timeline_never_replaces_the_one_asked_for_after_it(
    browser: Browser, app_url: str, db: asyncpg.Connection
) -> None:
    # Looking up one company, then another before the first answers: the page shows the
    # second, whatever order the answers come back in.
    viewer = await create_token(db, "Vera (viewer)", "viewer", "test")
    first_asked, release_first = asyncio.Event(), asyncio.Event()

    async def hold(route: Route) -> None:
        first_asked.set()
        await release_first.wait()
        await route.continue_()

    async with signed_in(browser, app_url, viewer) as (page, troubles):
        await page.route("**/api/timeline/company/lumenrobotics.com", hold)
        await page.fill("#timeline-key", "lumenrobotics.com")
        await page.click("#timeline-form button[type=submit]")
        await asyncio.wait_for(first_asked.wait(), WAIT_MS / 1000)
        await page.fill("#timeline-key", "bluefin-analytics.io")
        await page.click("#timeline-form button[type=submit]")
        await page.wait_for_selector("#timeline-result[data-state=ready]")

        await page.evaluate(SIGNAL_AFTER_READING, "/api/timeline/company/lumenrobotics.com")
        release_first.set()
        await page.wait_for_function("() => window.answerHandled")

        assert "Bluefin Analytics" in await page.inner_text("#timeline-result .subject")
        assert troubles.seen == []


async def test_dashboard__the_throughput_chart_comes_back_after_a_failed_read(
    browser: Browser, app_url: str, db: asyncpg.Connection
) -> None:
    # One failed read (a restart, a timeout) shows its error in the card; the next good one
    # draws the charts again, as every other card does.
    viewer = await create_token(db, "Vera (viewer)", "viewer", "test")

    async def fail(route: Route) -> None:
        failure = {"code": "unavailable", "message": "the database is restarting", "details": {}}
        await route.fulfill(status=503, json={"error": failure})

    async with signed_in(browser, app_url, viewer) as (page, troubles):
        await page.route("**/api/dashboard/throughput?window=24h", fail)
        await page.click('#throughput [data-window="24h"]')
        await page.wait_for_selector("#throughput[data-state=failed]")
        assert "the database is restarting" in await page.inner_text("#throughput")

        await page.click('#throughput [data-window="1h"]')
        await page.wait_for_selector("#throughput[data-state=ready]")

        assert await page.text_content("#throughput-title") == "Events processed per minute"
        assert await page.locator("#throughput-chart svg rect").count() > 0
        assert await page.locator("#latency .mini").count() == 6
        assert "restarting" not in await page.inner_text("#throughput")
        assert [t for t in troubles.seen if "503" not in t] == []


async def test_dashboard__a_rate_limit_banner_goes_once_requests_are_answered_again(
    browser: Browser, app_url: str, db: asyncpg.Connection
) -> None:
    viewer = await create_token(db, "Vera (viewer)", "viewer", "test")

    async def refuse(route: Route) -> None:
        await route.fulfill(
            status=429,
            headers={"Retry-After": "1"},
            json={"error": {"code": "rate_limited", "message": "too many requests",
                            "details": {"limit": "token", "retry_after": 1}}},
        )  # fmt: skip

    async with signed_in(browser, app_url, viewer) as (page, troubles):
        await page.route("**/api/dashboard/throughput?window=24h", refuse)
        await page.click('#throughput [data-window="24h"]')
        await page.wait_for_selector("#banner:not([hidden])")
        assert "Too many requests" in await page.inner_text("#banner")

        await mark_throughput_unread(page)
        await page.click('#throughput [data-window="1h"]')  # answered: the limit has passed
        await page.wait_for_selector("#throughput[data-state=ready]")

        assert await page.is_hidden("#banner")
        assert [t for t in troubles.seen if "429" not in t] == []


# Sets window.answerHandled once the page has read the body of the answer from `target` (a
# path and query) and done all it does with it: a timer task runs only after the awaits that
# follow the read have settled.
SIGNAL_AFTER_READING = """target => {
    const read = Response.prototype.json;
    Response.prototype.json = async function () {
        const body = await read.call(this);
        const url = new URL(this.url);
        if (url.pathname + url.search === target) {
            setTimeout(() => { window.answerHandled = true; });
        }
        return body;
    };
}"""


async def mark_throughput_unread(page: Page) -> None:
    """Marks the throughput section so that the next read to finish shows."""
    await page.eval_on_selector("#throughput", "node => { node.dataset.state = 'waiting'; }")


async def test_dashboard__a_refused_token_says_so_instead_of_a_blank_page(
    browser: Browser, app_url: str
) -> None:
    page = await browser.new_page()
    page.set_default_timeout(WAIT_MS)
    troubles = Troubles()
    troubles.watch(page)
    try:
        await page.goto(app_url + "/")
        await page.fill("#token", "cas_" + "x" * 43)
        await page.click("#signin-form button[type=submit]")
        await page.wait_for_selector("#signin-error:not([hidden])")

        assert "not accepted" in await page.inner_text("#signin-error")
        assert await page.is_hidden("#dashboard")
    finally:
        await page.close()
    # The refused /api/me is the only complaint (Chromium logs every 401 it receives).
    assert sorted(troubles.seen) == [
        f"HTTP 401: {app_url}/api/me",
        "console error: Failed to load resource: the server responded with a status of 401 "
        "(Unauthorized)",
    ]
