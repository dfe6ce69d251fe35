"""Seed 004 §9's region rule: contacts in the European countries, the United Kingdom, Canada
and Australia may be written to at a professional address only, so personal mailboxes found
for them are filtered out before a candidate can be accepted."""

from __future__ import annotations

# ISO 3166-1 alpha-2 codes: the EU, the rest of geographic Europe, then GB, CA and AU.
PROFESSIONAL_EMAIL_ONLY = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        "IS", "LI", "NO", "CH", "AL", "AD", "BA", "BY", "MD", "MC", "ME", "MK", "RS", "SM",
        "UA", "VA", "XK", "GB", "CA", "AU",
    }
)  # fmt: skip

# Names and aliases seen in CSVs, mapped to their codes (a two-letter code passes as is).
_COUNTRY_NAMES = {
    "united kingdom": "GB", "uk": "GB", "great britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB", "united states": "US",
    "usa": "US", "united states of america": "US", "us": "US", "canada": "CA",
    "australia": "AU", "germany": "DE", "deutschland": "DE", "france": "FR", "spain": "ES",
    "italy": "IT", "netherlands": "NL", "the netherlands": "NL", "belgium": "BE",
    "sweden": "SE", "norway": "NO", "denmark": "DK", "finland": "FI", "ireland": "IE",
    "austria": "AT", "switzerland": "CH", "poland": "PL", "portugal": "PT",
    "czech republic": "CZ", "czechia": "CZ", "greece": "GR", "hungary": "HU",
    "romania": "RO", "luxembourg": "LU", "iceland": "IS", "estonia": "EE", "latvia": "LV",
    "lithuania": "LT", "slovakia": "SK", "slovenia": "SI", "croatia": "HR",
    "bulgaria": "BG", "cyprus": "CY", "malta": "MT", "ukraine": "UA", "serbia": "RS",
    "india": "IN", "japan": "JP", "singapore": "SG", "brazil": "BR", "mexico": "MX",
    "new zealand": "NZ", "south africa": "ZA", "israel": "IL", "china": "CN",
}  # fmt: skip

# Free and consumer mailbox domains: an address there is personal, whoever owns it.
PERSONAL_EMAIL_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "ymail.com",
        "hotmail.com", "hotmail.co.uk", "hotmail.fr", "outlook.com", "live.com", "msn.com",
        "aol.com", "icloud.com", "me.com", "mac.com", "proton.me", "protonmail.com",
        "gmx.de", "gmx.net", "gmx.at", "web.de", "t-online.de", "orange.fr", "free.fr",
        "laposte.net", "libero.it", "btinternet.com", "sky.com", "shaw.ca", "rogers.com",
        "bigpond.com", "optusnet.com.au", "mail.com", "zoho.com", "yandex.ru", "mail.ru",
        "qq.com", "163.com",
    }
)  # fmt: skip


def country_code(country: str | None) -> str | None:
    """The ISO alpha-2 code for a country as a CSV or provider wrote it, if we know it."""
    text = (country or "").strip()
    if len(text) == 2 and text.isalpha():
        return "GB" if text.upper() == "UK" else text.upper()
    return _COUNTRY_NAMES.get(text.casefold())


def email_type(email: str) -> str:
    """'personal' for consumer mailboxes, 'professional' for everything else."""
    domain = email.rpartition("@")[2].strip().lower()
    return "personal" if domain in PERSONAL_EMAIL_DOMAINS else "professional"


def needs_professional_email(country: str | None) -> bool:
    return country_code(country) in PROFESSIONAL_EMAIL_ONLY
