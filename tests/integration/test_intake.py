"""The CSV importer against a real database: which lines it rejects and why (numbered by
physical line), what it stores, the events the intake trigger emits, re-imports, a long file,
the CLI's exit statuses and the shipped sample."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import psycopg
import pytest

from cascade.database import PROJECT_ROOT
from cascade.intake import ImportReport, IntakeFileError, Rejection, import_csv
from samples.make_companies import generate, write_csv

HEADER = b" Company Name ,WEBSITE,industry,Employee_Count,country,city,linkedin_url,company_id\n"
# One line of each kind; the comment after each is its physical line number.
MIXED_LINES = [
    b"Northwind Logistics GmbH,northwindlogistics.de,Logistics,120,Germany,Hamburg,,cmp_1\n",  # 2
    b",acme-widgets.com,Manufacturing,40,United States,Austin,,cmp_2\n",  # 3
    b'"Harbor, Quay\nDock Ltd",harborquay.co.uk,Logistics,,United Kingdom,Leeds,,cmp_3\n',  # 4-5
    b"Bluepeak Analytics,,Software,12,Ireland,Dublin,,cmp_4\n",  # 6
    b"Ironbridge Systems,not a website,IT,8,Canada,Toronto,,cmp_5\n",  # 7
    b"Silverline Foods,silverlinefoods.fr,Food,twelve,France,Lyon,,cmp_6\n",  # 8
    b"Brightwater Energy,brightwater.se\n",  # 9
    b"Kestrel M\xe9dical,kestrelmedical.fr,Medical,30,France,Paris,,cmp_7\n",  # 10
    b'"Redfern\nHealth\nPartners",redfernhealth.com,Health,12.5,Canada,Ottawa,,cmp_8\n',  # 11-13
    b"Oakhaven Media,https://oakhavenmedia.io/about,Media,55,Sweden,Malm\xc3\xb6,,cmp_9\n",  # 14
    b"N/A,stonegatepartners.com,Consulting,9,United States,Denver,,cmp_10\n",  # 15
    b"Clearpath Labs,gmail.com,Biotech,3,Netherlands,Utrecht,,cmp_11\n",  # 16
    b"Highmark Capital,http://,Finance,4,Canada,Ottawa,,cmp_12\n",  # 17
    b"\n",  # 18: a blank line is no record
    b"Pinecrest Freight,pinecrestfreight.com.au,Logistics,-5,Australia,Perth,,cmp_13\n",  # 19
]
EXPECTED_REJECTIONS = [
    Rejection(3, "missing company name"),
    Rejection(6, "missing website"),
    Rejection(7, "website 'not a website' contains spaces"),
    Rejection(8, "employee_count 'twelve' is not a whole number"),
    Rejection(9, "wrong number of columns: expected 8, got 2"),
    Rejection(10, "bad encoding: not UTF-8"),
    Rejection(11, "employee_count '12.5' is not a whole number"),
    Rejection(17, "website 'http://' has no host name"),
    Rejection(19, "employee_count '-5' is not a whole number"),
]
# Placeholder names and mail providers' domains are validation's to refuse, not the importer's.
EXPECTED_IMPORTED_LINES = [2, 4, 14, 15, 16]

INTAKE_ROWS = """
    SELECT id, company_name, website, employee_count, city, external_id, source, source_line,
           import_key, workflow_run_id
      FROM intake.company_raw_intake ORDER BY id
"""
CREATED_EVENTS = """
    SELECT record_id, payload FROM marketing.pipeline_events
     WHERE event_type = 'company_created' ORDER BY id
"""


@pytest.fixture
def mixed_csv(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER + b"".join(MIXED_LINES))  # with a BOM
    return path


def _copy_as(path: Path, name: str) -> Path:
    copy = path.with_name(name)
    copy.write_bytes(path.read_bytes())
    return copy


def _cli(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "CASCADE_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "cascade.cli", *arguments],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_csv__reports_each_bad_line_by_physical_line_and_reason(
    database_url: str, mixed_csv: Path
) -> None:
    report = import_csv(database_url, mixed_csv)

    assert report.rejected == EXPECTED_REJECTIONS
    assert (report.lines_read, report.imported, report.already_imported) == (14, 5, 0)


async def test_import_csv__stores_good_rows_with_source_and_one_event_each(
    db: asyncpg.Connection, database_url: str, mixed_csv: Path
) -> None:
    import_csv(database_url, mixed_csv)

    rows = await db.fetch(INTAKE_ROWS)
    assert [r["source_line"] for r in rows] == EXPECTED_IMPORTED_LINES
    assert {r["source"] for r in rows} == {"mixed.csv"}
    first, multiline, accented = rows[0], rows[1], rows[2]
    assert (first["company_name"], first["employee_count"], first["external_id"]) == (
        "Northwind Logistics GmbH",
        120,
        "cmp_1",
    )
    assert multiline["company_name"] == "Harbor, Quay\nDock Ltd"
    assert accented["city"] == "Malmö"
    assert all(len(r["import_key"]) == 64 and r["workflow_run_id"] is None for r in rows)
    events = await db.fetch(CREATED_EVENTS)
    assert [e["record_id"] for e in events] == [r["id"] for r in rows]


async def test_import_csv__reimport_inserts_nothing_and_counts_lines_already_there(
    db: asyncpg.Connection, database_url: str, mixed_csv: Path
) -> None:
    import_csv(database_url, mixed_csv)
    renamed = _copy_as(mixed_csv, "same-content.csv")

    again = import_csv(database_url, renamed)

    assert (again.imported, again.already_imported) == (0, 5)
    assert again.rejected == EXPECTED_REJECTIONS
    assert await db.fetchval("SELECT count(*) FROM intake.company_raw_intake") == 5
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_events") == 5


async def test_import_csv__loads_ten_thousand_lines_in_batches(
    db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "big.csv", rows=10_000, seed=3)
    seen: list[int] = []

    def progress(report: ImportReport) -> None:
        seen.append(report.imported + report.already_imported)

    report = import_csv(database_url, path, batch_rows=2_500, progress=progress)

    assert (report.lines_read, report.imported, report.rejected) == (10_000, 10_000, [])
    assert seen == [2_500, 5_000, 7_500, 10_000]
    assert await db.fetchval("SELECT count(*) FROM marketing.pipeline_events") == 10_000
    last_line = await db.fetchval("SELECT max(source_line) FROM intake.company_raw_intake")
    assert last_line == 10_001


async def test_import_csv__only_external_id_imports_that_line_alone(
    db: asyncpg.Connection, database_url: str, mixed_csv: Path
) -> None:
    report = import_csv(database_url, mixed_csv, only_external_id="cmp_9")

    assert (report.imported, report.matched, report.rejected) == (1, 1, [])
    assert await db.fetchval("SELECT external_id FROM intake.company_raw_intake") == "cmp_9"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"company_name,website,revenue,ceo\n", "unknown column(s) revenue, ceo"),
        (b"company_name,industry\n", "missing required column(s) website"),
        (b"company_name,website,Website\n", "repeated column(s) website"),
        (b"", "empty file"),
    ],
)
def test_import_csv__a_bad_header_is_one_error_and_loads_nothing(
    database_url: str, tmp_path: Path, header: bytes, message: str
) -> None:
    path = tmp_path / "bad-header.csv"
    path.write_bytes(header + b"Acme Widgets,acme-widgets.com,x,y\n" if header else b"")

    with pytest.raises(IntakeFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_csv(database_url, path)

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM intake.company_raw_intake").fetchone() == (0,)


def test_import_csv__refuses_a_connection_inside_a_transaction(
    database_url: str, mixed_csv: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")  # opens a transaction (autocommit is off)
        with pytest.raises(ValueError, match="outside a transaction"):
            import_csv(conn, mixed_csv)


def test_cli_import__exit_1_prints_each_rejected_line_and_writes_the_errors_file(
    database_url: str, mixed_csv: Path, tmp_path: Path
) -> None:
    errors = tmp_path / "errors.csv"

    result = _cli(database_url, "import", str(mixed_csv), "--errors", str(errors))

    assert result.returncode == 1, result.stderr
    assert "14 lines read, 5 imported, already imported: 0, rejected: 9" in result.stdout
    assert "line 3: missing company name" in result.stdout.splitlines()
    with errors.open(newline="") as handle:
        assert list(csv.reader(handle))[1:3] == [
            ["3", "missing company name"],
            ["6", "missing website"],
        ]


def test_cli_import__exit_0_when_every_line_is_imported_or_already_there(
    database_url: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "clean.csv", rows=20)

    first = _cli(database_url, "import", str(path))
    second = _cli(database_url, "import", str(path))

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "already imported: 20" in second.stdout


@pytest.mark.parametrize("content", [None, b"name,site\nAcme,acme.com\n"])
def test_cli_import__exit_2_for_an_unreadable_file_or_bad_header(
    database_url: str, tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)

    result = _cli(database_url, "import", str(path))

    assert result.returncode == 2
    assert "input.csv" in result.stderr


async def test_sample_csv__imports_with_nothing_rejected(
    db: asyncpg.Connection, database_url: str
) -> None:
    report = import_csv(database_url, PROJECT_ROOT / "samples" / "companies.csv")

    assert (report.lines_read, report.imported, report.rejected) == (300, 300, [])
    assert await db.fetchval("SELECT count(*) FROM intake.company_raw_intake") == 300


def test_generate__same_seed_same_companies_and_a_few_dirty_rows() -> None:
    rows = generate(1_000, seed=11)

    assert rows == generate(1_000, seed=11)
    assert rows != generate(1_000, seed=12)
    assert [r["company_id"] for r in rows[:2]] == ["cmp_00001", "cmp_00002"]
    placeholders = sum(r["company_name"] in {"N/A", "Unknown", "TBD", "-", "n/a", "None"}
                       for r in rows)  # fmt: skip
    assert 0 < placeholders < 50
