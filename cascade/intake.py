"""The CSV importer: companies from a file into intake.company_raw_intake, at COPY speed.

A file is streamed record by record (never loaded whole), so its size is bounded by the disk,
not memory. Each line is checked for what the importer alone can judge: the CSV's shape, the
encoding, a company name present, a website present and parseable, a whole employee count. A
bad line is reported with its physical line number (the header is line 1; a record with a
quoted newline is numbered by the line it starts on) and its neighbours go through. Whether a
name is a placeholder or a website a mail provider's is validation's verdict, recorded on the
intake row by the company_created handler: the importer keeps such lines.

Good rows are loaded per batch: COPY into a temporary staging table, then one
`INSERT ... SELECT ... ON CONFLICT (import_key) DO NOTHING`, committed per batch. The intake
trigger emits one company_created event per inserted row in that same transaction, so the
cascade starts on the first batch while the rest of the file is still loading.

`import_key` is the sha256 (hex) of the line's normalised content: the company name with its
whitespace collapsed and casefolded, the website's registrable domain, and the casefolded
country, joined by a unit separator. Importing the same file again, or a re-export that only
changed other columns, adds nothing; a later line of the same file with the same key counts as
already imported too. Two spellings of one company's name are two keys: validation then
de-duplicates them by domain.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, LiteralString

import psycopg

from cascade.enrichment.domains import NotACompany, website_domain

# ON COMMIT DROP: each batch gets its own staging table and leaves nothing behind on the
# caller's connection, whether the batch commits or rolls back.
CREATE_STAGING: LiteralString = """
    CREATE TEMPORARY TABLE intake_staging (
        company_name    text,
        website         text,
        industry        text,
        employee_count  integer,
        country         text,
        city            text,
        linkedin_url    text,
        external_id     text,
        source          text,
        source_line     integer,
        import_key      text,
        workflow_run_id bigint
    ) ON COMMIT DROP
"""
COPY_STAGING: LiteralString = """
    COPY intake_staging (company_name, website, industry, employee_count, country, city,
                         linkedin_url, external_id, source, source_line, import_key,
                         workflow_run_id)
    FROM STDIN
"""
# One statement per batch: the statement-level intake trigger then writes the batch's events
# in one INSERT. ORDER BY keeps intake ids (and so events) in file order.
INSERT_FROM_STAGING: LiteralString = """
    INSERT INTO intake.company_raw_intake
        (company_name, website, industry, employee_count, country, city, linkedin_url,
         external_id, source, source_line, import_key, workflow_run_id)
    SELECT company_name, website, industry, employee_count, country, city, linkedin_url,
           external_id, source, source_line, import_key, workflow_run_id
      FROM intake_staging
     ORDER BY source_line
        ON CONFLICT (import_key) DO NOTHING
"""

# Header name (normalised) -> intake column.
COLUMNS: dict[str, str] = {
    "company_name": "company_name",
    "website": "website",
    "industry": "industry",
    "employee_count": "employee_count",
    "country": "country",
    "city": "city",
    "linkedin_url": "linkedin_url",
    "company_id": "external_id",
}
REQUIRED_COLUMNS = ("company_name", "website")
MAX_EMPLOYEE_COUNT = 2**31 - 1  # the column is a Postgres integer

# open(errors="surrogateescape") turns each byte that is not UTF-8 into one of these.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_SPACES = re.compile(r"\s+")
_WHOLE_NUMBER = re.compile(r"\d+")
_KEY_SEPARATOR = "\x1f"


class IntakeFileError(ValueError):
    """The file cannot be imported at all (unreadable, empty, bad header); nothing was loaded."""


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ImportReport:
    """What an import did. `lines_read` counts data records (not the header or blank lines);
    `skipped` counts records left out by `only_external_id`."""

    source: str
    lines_read: int = 0
    imported: int = 0
    already_imported: int = 0
    skipped: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def matched(self) -> int:
        """Records considered (not skipped): what `only_external_id` found."""
        return self.lines_read - self.skipped

    def summary(self) -> str:
        text = (
            f"{self.source}: {self.lines_read} lines read, {self.imported} imported, "
            f"already imported: {self.already_imported}, rejected: {len(self.rejected)}"
        )
        return f"{text}, skipped: {self.skipped}" if self.skipped else text


Progress = Callable[[ImportReport], None]


@dataclass(frozen=True)
class _Header:
    columns: tuple[str, ...]  # the intake column of each field, in file order

    def index(self, column: str) -> int:
        return self.columns.index(column)


@dataclass(frozen=True)
class _Record:
    line: int
    fields: list[str]
    last_line: int = 0  # where it ends: further down when a quoted field spans lines


# -- reading ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _open(path: Path) -> Iterator[IO[str]]:
    try:
        # utf-8-sig drops a BOM; newline="" lets csv see quoted newlines as they are.
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            yield handle
    except IsADirectoryError:
        raise IntakeFileError(f"{path}: is a folder, not a CSV file") from None
    except OSError as exc:
        raise IntakeFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _header_key(name: str) -> str:
    return _SPACES.sub("_", name.strip().casefold())


def _parse_header(path: Path, fields: list[str] | None) -> _Header:
    if not fields:
        raise IntakeFileError(f"{path}: empty file; expected a header row")
    if any(_UNDECODABLE.search(name) for name in fields):
        raise IntakeFileError(f"{path}: line 1 (header): bad encoding, not UTF-8")
    names = [_header_key(name) for name in fields]
    problems = []
    if unknown := [name for name in names if name not in COLUMNS]:
        known = ", ".join(COLUMNS)
        problems.append(f"unknown column(s) {', '.join(unknown)} (known: {known})")
    if missing := [name for name in REQUIRED_COLUMNS if name not in names]:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        raise IntakeFileError(f"{path}: line 1 (header): {'; '.join(problems)}")
    return _Header(tuple(COLUMNS[name] for name in names))


def _records(reader: Any, first_line: int) -> Iterator[_Record | Rejection]:
    """Each record with the physical line it starts on; csv.reader's line_num is the last line
    it has consumed, so a record starts one after the previous record ended."""
    start = first_line
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Rejection(start, f"malformed CSV: {exc}")
        else:
            if fields:  # a blank line is no record
                yield _Record(start, fields, reader.line_num)
        start = reader.line_num + 1


def check_file(path: Path | str) -> None:
    """Raises IntakeFileError if the file cannot be opened or its header is wrong."""
    path = Path(path)
    with _open(path) as handle:
        _parse_header(path, next(csv.reader(handle), None))


# -- checking one record ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    values: dict[str, str | None]
    employee_count: int | None
    import_key: str


def _key_domain(website: str) -> str:
    """The registrable domain the import key is made of. A mail provider's or reserved domain
    reads fine and is validation's to refuse, with its reason on the intake row; a website
    that cannot be read at all rejects the line here."""
    return website_domain(website)


def _employee_count(text: str | None) -> int | None:
    if text is None:
        return None
    if not _WHOLE_NUMBER.fullmatch(text):
        raise NotACompany(f"employee_count {text!r} is not a whole number")
    count = int(text)
    if count > MAX_EMPLOYEE_COUNT:
        raise NotACompany(f"employee_count {text!r} is too large")
    return count


def import_key(name: str, domain: str, country: str | None) -> str:
    parts = (_SPACES.sub(" ", name).strip().casefold(), domain, (country or "").casefold())
    return hashlib.sha256(_KEY_SEPARATOR.join(parts).encode()).hexdigest()


def _check(header: _Header, record: _Record) -> _Row:
    """The row to stage; raises NotACompany with the reason the line is rejected."""
    if len(record.fields) != len(header.columns):
        problem = (
            f"wrong number of columns: expected {len(header.columns)}, got {len(record.fields)}"
        )
        if record.last_line > record.line:
            # Most likely a quote opened and never closed: say which lines it swallowed,
            # since they are not imported and are not reported on their own.
            problem += (
                f"; lines {record.line}-{record.last_line} were read as one record"
                " (an unclosed quote?)"
            )
        raise NotACompany(problem)
    if any(_UNDECODABLE.search(value) for value in record.fields):
        raise NotACompany("bad encoding: not UTF-8")
    if any("\x00" in value for value in record.fields):
        raise NotACompany("contains a NUL character")
    values = {
        column: (value.strip() or None)
        for column, value in zip(header.columns, record.fields, strict=True)
    }
    name = values["company_name"]
    if name is None:
        raise NotACompany("missing company name")
    domain = _key_domain(values["website"] or "")
    count = _employee_count(values.get("employee_count"))
    return _Row(values, count, import_key(name, domain, values.get("country")))


# -- loading ----------------------------------------------------------------------------------


def _staged(row: _Row, source: str, line: int, workflow_run_id: int | None) -> tuple[Any, ...]:
    v = row.values
    return (
        v["company_name"], v["website"], v.get("industry"), row.employee_count, v.get("country"),
        v.get("city"), v.get("linkedin_url"), v.get("external_id"), source, line,
        row.import_key, workflow_run_id,
    )  # fmt: skip


def _load_batch(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> int:
    """Stages and inserts one batch in its own transaction; returns the rows inserted."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(CREATE_STAGING)
        with cur.copy(COPY_STAGING) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(INSERT_FROM_STAGING)
        return cur.rowcount


@dataclass
class _Importer:
    conn: psycopg.Connection[Any]
    header: _Header
    report: ImportReport
    workflow_run_id: int | None
    only_external_id: str | None
    batch_rows: int
    progress: Progress | None
    batch: list[tuple[Any, ...]] = field(default_factory=list)

    def take(self, item: _Record | Rejection) -> None:
        self.report.lines_read += 1
        if isinstance(item, Rejection):
            self.report.rejected.append(item)
        elif not self._selected(item):
            self.report.skipped += 1
        else:
            try:
                row = _check(self.header, item)
            except NotACompany as exc:
                self.report.rejected.append(Rejection(item.line, str(exc)))
                return
            self.batch.append(_staged(row, self.report.source, item.line, self.workflow_run_id))
            if len(self.batch) >= self.batch_rows:
                self.flush()

    def _selected(self, record: _Record) -> bool:
        if self.only_external_id is None:
            return True
        if "external_id" not in self.header.columns:
            return False
        position = self.header.index("external_id")
        return (
            len(record.fields) == len(self.header.columns)
            and record.fields[position].strip() == self.only_external_id
        )

    def flush(self) -> None:
        if not self.batch:
            return
        inserted = _load_batch(self.conn, self.batch)
        self.report.imported += inserted
        self.report.already_imported += len(self.batch) - inserted
        self.batch.clear()
        if self.progress is not None:
            self.progress(self.report)


@contextlib.contextmanager
def _connection(url_or_conn: str | psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    if not isinstance(url_or_conn, str):
        if url_or_conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            # Each batch must commit on its own, with its events; inside the caller's
            # transaction it would only be a savepoint and the cascade would wait for the end.
            raise ValueError("import_csv commits per batch: call it outside a transaction")
        yield url_or_conn
        return
    with psycopg.connect(url_or_conn) as conn:
        yield conn


def import_csv(
    url_or_conn: str | psycopg.Connection[Any],
    path: Path | str,
    *,
    workflow_run_id: int | None = None,
    only_external_id: str | None = None,
    batch_rows: int = 5000,
    progress: Progress | None = None,
) -> ImportReport:
    """Imports a CSV of companies; see the module docstring. Raises IntakeFileError, before
    loading anything, when the file is unreadable or its header wrong."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, not {batch_rows}")
    path = Path(path)
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = _parse_header(path, next(reader, None))
        report = ImportReport(source=path.name)
        with _connection(url_or_conn) as conn:
            importer = _Importer(
                conn, header, report, workflow_run_id, only_external_id, batch_rows, progress
            )
            for item in _records(reader, first_line=reader.line_num + 1):
                importer.take(item)
            importer.flush()
    return report
