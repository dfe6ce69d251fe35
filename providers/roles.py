"""What a title for each role looks like, and whose email is professional: the rules the
finders use to filter and to score what providers return, kept in one place so that
PeopleDataLabs, Prospeo and the sandbox agree."""

from __future__ import annotations

import re

from providers.base import Role

# Titles, lower-case, matched on word boundaries. A few non-English forms appear because the
# pipeline's companies are not all English-speaking; "founder" and "president" are left out
# because neither says who runs the company day to day.
_TITLE_PATTERNS: dict[Role, re.Pattern[str]] = {
    "CEO": re.compile(
        r"\b(chief executive|ceo|managing director|geschäftsführer|directeur général"
        r"|consejero delegado|amministratore delegato)\b"
    ),
    "CFO": re.compile(
        r"\b(chief financial|cfo|finance director|director of finance|head of finance"
        r"|vp,? finance|vice president,? finance|directeur financier)\b"
    ),
    "HR": re.compile(
        r"\b(human resources|hr|chro|chief people|head of people|vp,? people|people director"
        r"|director of people|people (&|and) culture|people operations|talent director)\b"
    ),
}


def title_matches(role: Role, title: str | None) -> bool:
    return title is not None and _TITLE_PATTERNS[role].search(title.lower()) is not None


def email_at(domain: str, email: str | None) -> bool:
    """Whether the address is at the company's domain (or one of its subdomains)."""
    if email is None or "@" not in email:
        return False
    host = email.rsplit("@", 1)[1].lower()
    domain = domain.lower()
    return host == domain or host.endswith("." + domain)


def clamp(score: float) -> float:
    return min(1.0, max(0.0, score))
