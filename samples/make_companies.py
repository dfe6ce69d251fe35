"""Writes a CSV of invented B2B companies for `cascade import`, deterministically.

Every company is made up: names from word lists, websites on invented domains whose suffix
matches the country. About 3 % of rows are dirty the way real exports are, and validation
(not the importer) refuses them: a placeholder name, a mail provider's or a social network's
address as the website. About 1 % list an earlier company again under another spelling, with
or without `www.`, which validation marks as a duplicate by domain. No line is malformed, so
the whole file imports with nothing rejected.

    python -m samples.make_companies --rows 300 --seed 7 --out samples/companies.csv
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HEADER = (
    "company_id", "company_name", "website", "industry", "employee_count", "country", "city",
    "linkedin_url",
)  # fmt: skip
DIRTY_SHARE = 0.03
DUPLICATE_SHARE = 0.01


@dataclass(frozen=True)
class Country:
    name: str
    suffixes: tuple[str, ...]  # domain suffixes, the first the most common
    legal_forms: tuple[str, ...]
    cities: tuple[str, ...]


COUNTRIES = (
    Country("United States", ("com", "io", "co"), ("Inc.", "LLC", "Corp."),
            ("Austin", "Denver", "Chicago", "Boston", "Seattle", "Atlanta", "San Diego")),
    Country("United Kingdom", ("co.uk", "com", "io"), ("Ltd", "PLC", "Ltd"),
            ("London", "Manchester", "Leeds", "Bristol", "Edinburgh", "Birmingham")),
    Country("Germany", ("de", "com"), ("GmbH", "AG", "GmbH & Co. KG"),
            ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt", "Stuttgart")),
    Country("France", ("fr", "com"), ("SAS", "SARL", "SA"),
            ("Paris", "Lyon", "Toulouse", "Nantes", "Lille", "Bordeaux")),
    Country("Australia", ("com.au",), ("Pty Ltd",),
            ("Sydney", "Melbourne", "Brisbane", "Perth", "Adelaide")),
    Country("Canada", ("ca", "com"), ("Inc.", "Ltd."),
            ("Toronto", "Vancouver", "Montreal", "Calgary", "Ottawa")),
    Country("Netherlands", ("nl", "com"), ("B.V.", "N.V."),
            ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven", "The Hague")),
    Country("Sweden", ("se", "com"), ("AB",),
            ("Stockholm", "Gothenburg", "Malmö", "Uppsala")),
    Country("Ireland", ("ie", "com"), ("Ltd", "DAC"),
            ("Dublin", "Cork", "Galway", "Limerick")),
)  # fmt: skip
# The United States and the United Kingdom weigh most, as in a typical outbound list.
COUNTRY_WEIGHTS = (30, 18, 12, 8, 7, 7, 7, 5, 6)

# A name opens with a coined word of two halves: 30 x 30 of them, so 10,000 companies
# still find free names quickly.
FIRST_HALVES = (
    "North", "Blue", "Iron", "Silver", "Bright", "Red", "Oak", "Stone", "Clear", "High",
    "Pine", "River", "Salt", "Thorn", "West", "Ash", "Copper", "Drift", "Fox", "Gold",
    "Hollow", "Lark", "Marl", "Nettle", "Raven", "Sable", "Wren", "Alder", "Bramble", "Cinder",
)  # fmt: skip
SECOND_HALVES = (
    "wind", "peak", "bridge", "line", "water", "fern", "haven", "gate", "path", "mark",
    "crest", "bend", "marsh", "bury", "moor", "grove", "leaf", "wood", "glove", "field",
    "well", "spur", "ford", "cote", "stead", "brook", "ridge", "hurst", "combe", "vale",
)  # fmt: skip
# The word a name ends in, and the industry such a company is listed under.
TRADES = (
    ("Logistics", "Logistics & Supply Chain"), ("Freight", "Logistics & Supply Chain"),
    ("Analytics", "Software"), ("Software", "Software"), ("Systems", "Information Technology"),
    ("Cloud", "Information Technology"), ("Robotics", "Industrial Automation"),
    ("Manufacturing", "Manufacturing"), ("Foods", "Food & Beverage"),
    ("Brewing", "Food & Beverage"), ("Health", "Healthcare"), ("Medical", "Medical Devices"),
    ("Capital", "Financial Services"), ("Insurance", "Insurance"), ("Energy", "Renewable Energy"),
    ("Solar", "Renewable Energy"), ("Consulting", "Management Consulting"),
    ("Partners", "Professional Services"), ("Legal", "Legal Services"),
    ("Construction", "Construction"), ("Properties", "Real Estate"), ("Media", "Marketing"),
    ("Studios", "Design"), ("Labs", "Biotechnology"), ("Security", "Cybersecurity"),
    ("Telecom", "Telecommunications"), ("Retail", "Retail"), ("Textiles", "Apparel"),
)  # fmt: skip

PLACEHOLDER_NAMES = ("N/A", "Unknown", "TBD", "-", "n/a", "None")
NOT_OWN_WEBSITES = (
    "gmail.com", "https://www.hotmail.com", "outlook.com", "https://mail.yahoo.com",
    "https://www.linkedin.com/company/{slug}", "https://www.facebook.com/{slug}",
)  # fmt: skip


def _employee_count(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return ""  # not every export knows it
    return str(max(2, int(rng.lognormvariate(4.2, 1.3))))


def _website(rng: random.Random, domain: str) -> str:
    return rng.choice((f"https://www.{domain}", f"https://{domain}", f"www.{domain}", domain,
                       f"http://www.{domain}/", f"https://www.{domain}/about"))  # fmt: skip


def _company(rng: random.Random, taken: set[str]) -> dict[str, str]:
    while True:
        country = rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
        prefix = rng.choice(FIRST_HALVES) + rng.choice(SECOND_HALVES)
        trade, industry = rng.choice(TRADES)
        slug = f"{prefix}{trade}".lower()
        domain = f"{slug}.{rng.choice(country.suffixes)}"
        if slug not in taken:
            taken.add(slug)
            break
    legal = rng.choice(country.legal_forms) if rng.random() < 0.7 else ""
    return {
        "company_name": f"{prefix} {trade} {legal}".strip(),
        "website": _website(rng, domain),
        "industry": industry,
        "employee_count": _employee_count(rng),
        "country": country.name,
        "city": rng.choice(country.cities),
        "linkedin_url": f"https://www.linkedin.com/company/{prefix.lower()}-{trade.lower()}",
        "domain": domain,
        "legal": legal,
        "country_legal": country.legal_forms[0],
    }


def _dirty(rng: random.Random, company: dict[str, str]) -> dict[str, str]:
    """A row validation refuses: a placeholder name, or an address that is not the company's."""
    if rng.random() < 0.5:
        return {**company, "company_name": rng.choice(PLACEHOLDER_NAMES)}
    slug = company["linkedin_url"].rsplit("/", 1)[-1]
    return {**company, "website": rng.choice(NOT_OWN_WEBSITES).format(slug=slug)}


def _listed_again(rng: random.Random, original: dict[str, str]) -> dict[str, str]:
    """The same company under another spelling of its name, with or without www."""
    if original["legal"]:
        name = original["company_name"].removesuffix(original["legal"]).strip()
    else:
        name = f"{original['company_name']} {original['country_legal']}"
    address = original["website"].removeprefix("https://").removeprefix("http://")
    www = not address.startswith("www.")
    website = f"https://{'www.' if www else ''}{original['domain']}"
    return {**original, "company_name": name, "website": website,
            "employee_count": _employee_count(rng)}  # fmt: skip


def generate(rows: int, seed: int = 7) -> list[dict[str, str]]:
    """`rows` companies as CSV rows keyed by HEADER; the same seed gives the same rows."""
    rng = random.Random(seed)
    taken: set[str] = set()
    clean: list[dict[str, str]] = []
    made: list[dict[str, str]] = []
    for number in range(1, rows + 1):
        roll = rng.random()
        if roll < DUPLICATE_SHARE and clean:
            # Each company is listed again at most once: two repeats could spell it alike.
            company = _listed_again(rng, clean.pop(rng.randrange(len(clean))))
        elif roll < DUPLICATE_SHARE + DIRTY_SHARE:
            company = _dirty(rng, _company(rng, taken))
        else:
            company = _company(rng, taken)
            clean.append(company)
        made.append({**company, "company_id": f"cmp_{number:05d}"})
    return [{column: row[column] for column in HEADER} for row in made]


def write_csv(out: Path, rows: int, seed: int = 7) -> Path:
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(generate(rows, seed))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a CSV of invented B2B companies.")
    parser.add_argument("--rows", type=int, default=300, help="data rows (default 300)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    args = parser.parse_args(argv)
    write_csv(args.out, args.rows, args.seed)
    print(f"wrote {args.rows} companies to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
