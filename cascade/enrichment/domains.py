"""Company names and websites, normalised as intake and validation both need them.

A website is reduced to its registrable domain (`https://www.shop.acme.co.uk/about` ->
`acme.co.uk`) with the Public Suffix List that tldextract ships, read offline: that domain is
what de-duplicates companies and what their contacts' professional emails end in.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import tldextract

# The snapshot bundled with tldextract: no download at start-up, same answer everywhere. The
# list's private section counts too: on hosting platforms (myshopify.com, github.io) each
# tenant is its own site, so acme.myshopify.com and borealis.myshopify.com are two companies.
_PUBLIC_SUFFIXES = tldextract.TLDExtract(
    suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True
)

# Domains that can never be a company's own site: mail providers and reserved names.
NOT_A_COMPANY_DOMAIN = frozenset(
    {
        "example.com", "example.org", "example.net", "gmail.com", "googlemail.com",
        "yahoo.com", "hotmail.com", "outlook.com", "live.com", "aol.com", "icloud.com",
        "proton.me", "protonmail.com", "gmx.de", "gmx.net", "web.de", "mail.ru", "yandex.ru",
        "qq.com", "163.com", "linkedin.com", "facebook.com", "twitter.com", "x.com",
        "instagram.com", "wikipedia.org",
    }
)  # fmt: skip

# Placeholders that spreadsheets put where a name is missing.
PLACEHOLDER_NAMES = frozenset(
    {"n/a", "na", "none", "null", "nil", "unknown", "tbd", "test", "-", "--", "?", "xxx"}
)

_SPACES = re.compile(r"\s+")
_HAS_ALNUM = re.compile(r"\w", re.UNICODE)


class NotACompany(ValueError):
    """The value cannot belong to a company; the message says why, for the intake row."""


def company_name(raw: str | None) -> str:
    """The name with its whitespace collapsed; refuses blanks and placeholders."""
    name = _SPACES.sub(" ", raw or "").strip()
    if not name:
        raise NotACompany("missing company name")
    if name.casefold() in PLACEHOLDER_NAMES or not _HAS_ALNUM.search(name):
        raise NotACompany(f"company name {name!r} is a placeholder, not a name")
    if len(name) < 2:
        raise NotACompany(f"company name {name!r} is too short")
    return name


def registrable_domain(website: str | None) -> str:
    """The registrable domain of a company's website, lower-case and in punycode; refuses
    mail providers' and reserved domains, which are nobody's company site."""
    domain = website_domain(website)
    if domain in NOT_A_COMPANY_DOMAIN:
        raise NotACompany(
            f"website {(website or '').strip()!r} is {domain}, not a company's own domain"
        )
    return domain


def website_domain(website: str | None) -> str:
    """The registrable domain of any website, lower-case and in punycode; refuses only what
    cannot be read as a web address at all."""
    text = (website or "").strip()
    if not text:
        raise NotACompany("missing website")
    if any(ch.isspace() for ch in text):
        raise NotACompany(f"website {text!r} contains spaces")
    try:
        parsed = urlsplit(text if "://" in text else f"http://{text}")
    except ValueError as exc:  # "Invalid IPv6 URL": a [ or ] outside an IPv6 literal
        raise NotACompany(f"website {text!r} cannot be parsed: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise NotACompany(f"website {text!r} is not an http(s) address")
    try:
        host = parsed.hostname
    except ValueError as exc:
        raise NotACompany(f"website {text!r} cannot be parsed: {exc}") from None
    if not host:
        raise NotACompany(f"website {text!r} has no host name")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise NotACompany(f"website {text!r} is an IP address, not a domain")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise NotACompany(f"website {text!r} has an invalid international name") from None
    parts = _PUBLIC_SUFFIXES(host)
    if not parts.domain or not parts.suffix:
        raise NotACompany(f"website {text!r} has no registrable domain")
    return f"{parts.domain}.{parts.suffix}"
