"""Is a webhook delivery authentic? Checked on the raw body bytes, before anything is parsed.

Three schemes, chosen per provider:
- `standard`: Standard Webhooks (standardwebhooks.com). HMAC-SHA256 of
  `{webhook-id}.{webhook-timestamp}.{body}`, base64, sent as space-separated `v1,<sig>`
  entries in `webhook-signature`; the secret is `whsec_` + base64 of the key.
- `stripe`: `t=<seconds>,v1=<hex>[,v1=<hex>...]` with the hex HMAC-SHA256 of `{t}.{body}`;
  the key is the secret string itself, `whsec_` prefix included, as Stripe does it.
- `shared_secret`: for providers that sign nothing (Instantly): a header carries the secret.
- `none`: the provider offers no way to authenticate; every delivery is unverified.

Secrets come from `WEBHOOK_SECRET_<PROVIDER>`, comma-separated while a secret is rotated; any
one of them may match. A provider with no secret set is accepted *unverified* (CONTRACT.md),
which callers must log loudly. A malformed secret is a configuration error raised when the
secrets are read at startup, never a 401 at request time.

Pure functions of (secrets, headers, body, now): no clock, no I/O, so tests pin time exactly.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, assert_never

# Both Standard Webhooks and Stripe default to five minutes; it bounds how long a captured
# delivery can be replayed. Applied both ways: a timestamp from the future is as suspect.
TOLERANCE_SECONDS = 300

# S105 takes any "SECRET" name for a password; these are a prefix and a header name.
STANDARD_SECRET_PREFIX = "whsec_"  # noqa: S105
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
DEFAULT_STRIPE_HEADER = "stripe-signature"
DEFAULT_SECRET_HEADER = "x-webhook-secret"  # noqa: S105

# Unix seconds as ASCII digits only: str.isdigit() would also accept "²" or Arabic digits.
_SECONDS = re.compile(r"[0-9]{1,12}")


class Scheme(StrEnum):
    STANDARD = "standard"
    STRIPE = "stripe"
    SHARED_SECRET = "shared_secret"  # noqa: S105 (a scheme's name, not a password)
    NONE = "none"


FailureCode = Literal[
    "missing_signature", "bad_timestamp", "stale_timestamp", "bad_signature", "malformed_header"
]


class ConfigurationError(ValueError):
    """A webhook secret in the environment cannot be used. Never carries the secret itself."""


@dataclass(frozen=True)
class Verification:
    """The verdict on one delivery. `rejected` is a 401; `unverified` is accepted but flagged."""

    status: Literal["verified", "unverified", "rejected"]
    message: str
    code: FailureCode | None = None

    @property
    def accepted(self) -> bool:
        return self.status != "rejected"


@dataclass(frozen=True)
class ProviderSecrets:
    """One provider's scheme and its usable keys (several while a secret is rotated).

    The keys are decoded for the scheme when they are read, so a bad secret fails at startup.
    """

    provider: str
    scheme: Scheme
    keys: tuple[bytes, ...] = field(default=(), repr=False)  # repr=False: keys never hit logs

    @classmethod
    def from_env(
        cls, provider: str, environ: Mapping[str, str], *, scheme: Scheme
    ) -> ProviderSecrets:
        values = environ.get(secret_variable(provider), "").split(",")
        return cls.from_values(provider, values, scheme=scheme)

    @classmethod
    def from_values(
        cls, provider: str, values: Iterable[str], *, scheme: Scheme
    ) -> ProviderSecrets:
        secrets = [value.strip() for value in values if value.strip()]
        variable = secret_variable(provider)
        if secrets and scheme is Scheme.NONE:
            # A secret that is silently ignored looks like protection that is not there.
            raise ConfigurationError(f"{variable} is set, but {provider} uses scheme 'none'")
        keys = (_key(scheme, s, f"{variable} entry {n}") for n, s in enumerate(secrets, 1))
        return cls(provider, scheme, tuple(keys))

    # Cached: read on every delivery (its verdict's message names the variable).
    @functools.cached_property
    def variable(self) -> str:
        return secret_variable(self.provider)

    @functools.cached_property
    def key_digests(self) -> tuple[bytes, ...]:
        """The SHA-256 of each key, which a shared-secret header is compared with."""
        return tuple(hashlib.sha256(key).digest() for key in self.keys)


def secret_variable(provider: str) -> str:
    """`WEBHOOK_SECRET_<PROVIDER>`: upper case, anything but letters and digits as `_`."""
    if not provider:
        raise ValueError("a provider name is required")
    return "WEBHOOK_SECRET_" + re.sub(r"[^A-Z0-9]", "_", provider.upper())


def verify(
    secrets: ProviderSecrets,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    header: str | None = None,
) -> Verification:
    """Check one delivery. `header` names the carrying header for the stripe and
    shared_secret schemes (Standard Webhooks fixes its own); header names ignore case."""
    if secrets.scheme is Scheme.NONE:
        return Verification("unverified", f"{secrets.provider} signs nothing: unverified")
    if not secrets.keys:
        return Verification("unverified", f"{secrets.variable} is not set: unverified")
    # The first copy of a repeated header, as Starlette's Headers.get and a delivery's key
    # read it: reading the last here let a signed delivery be replayed under an extra
    # webhook-id placed before the signed one (verified under one id, stored under another).
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    match secrets.scheme:
        case Scheme.STANDARD:
            return _verify_standard(secrets, lowered, body, now)
        case Scheme.STRIPE:
            return _verify_stripe(secrets, lowered, body, now, header or DEFAULT_STRIPE_HEADER)
        case Scheme.SHARED_SECRET:
            return _verify_shared_secret(secrets, lowered, header or DEFAULT_SECRET_HEADER)
        case _:
            assert_never(secrets.scheme)


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers a sender would attach to `body`."""
    key = _standard_key(secret, "the secret")
    signature = _hmac(key, _standard_content(msg_id, str(timestamp), body))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(signature).decode("ascii"),
    }


def sign_stripe(secret: str, timestamp: int, body: bytes) -> str:
    """A Stripe-style signature header value for `body`."""
    signature = _hmac(secret.encode(), _stripe_content(str(timestamp), body))
    return f"t={timestamp},v1={signature.hex()}"


# Standard Webhooks


def _verify_standard(
    secrets: ProviderSecrets, headers: Mapping[str, str], body: bytes, now: float
) -> Verification:
    for name in STANDARD_HEADERS:
        if not headers.get(name):
            return _rejected("missing_signature", f"the {name} header is missing")
    msg_id, timestamp, signature_header = (headers[name] for name in STANDARD_HEADERS)
    if not _SECONDS.fullmatch(timestamp):
        return _rejected("bad_timestamp", "webhook-timestamp is not a whole number of seconds")
    entries = [entry.partition(",") for entry in signature_header.split()]
    if any(not comma for _, comma, _ in entries):
        return _rejected("malformed_header", "webhook-signature entries must be 'v1,<base64>'")
    # Other versions (v1a is ed25519) are ignored, as the spec asks, not treated as failures.
    given = [sig.encode() for version, _, sig in entries if version == "v1"]
    if not given:
        return _rejected("missing_signature", "webhook-signature holds no v1 signature")
    content = _standard_content(msg_id, timestamp, body)
    expected = [base64.b64encode(_hmac(key, content)) for key in secrets.keys]
    return _judge(
        secrets, "webhook-signature", expected, given, "webhook-timestamp", timestamp, now
    )


def _standard_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    # The id and timestamp are signed too, so neither can be swapped onto another body.
    return f"{msg_id}.{timestamp}.".encode() + body


def _standard_key(secret: str, where: str) -> bytes:
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        # Some senders drop base64 padding; the reference libraries accept that too.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise ConfigurationError(
            f"{where} is not base64; a Standard Webhooks secret is 'whsec_' + base64"
        ) from None
    if not key:
        raise ConfigurationError(f"{where} decodes to an empty key")
    return key


# Stripe-style


def _verify_stripe(
    secrets: ProviderSecrets, headers: Mapping[str, str], body: bytes, now: float, name: str
) -> Verification:
    value = headers.get(name)
    if not value:
        return _rejected("missing_signature", f"the {name} header is missing")
    pairs = [item.strip().partition("=") for item in value.split(",")]
    if any(not equals for _, equals, _ in pairs):
        return _rejected("malformed_header", f"{name} must be 't=<seconds>,v1=<hex>'")
    timestamps = [v for k, _, v in pairs if k == "t"]
    if len(timestamps) != 1:
        return _rejected("malformed_header", f"{name} must carry exactly one t= element")
    if not _SECONDS.fullmatch(timestamps[0]):
        return _rejected("bad_timestamp", f"t= in {name} is not a whole number of seconds")
    # v0 and any future scheme are ignored: only v1 is HMAC-SHA256.
    given = [v.lower().encode() for k, _, v in pairs if k == "v1"]
    if not given:
        return _rejected("missing_signature", f"{name} holds no v1 signature")
    content = _stripe_content(timestamps[0], body)
    expected = [_hmac(key, content).hex().encode() for key in secrets.keys]
    return _judge(secrets, name, expected, given, f"t= in {name}", timestamps[0], now)


def _stripe_content(timestamp: str, body: bytes) -> bytes:
    return f"{timestamp}.".encode() + body


# Shared secret


def _verify_shared_secret(
    secrets: ProviderSecrets, headers: Mapping[str, str], name: str
) -> Verification:
    value = headers.get(name)
    if not value:
        return _rejected("missing_signature", f"the {name} header is missing")
    # Hashing first gives equal-length inputs, so the comparison leaks not even the length.
    given = [hashlib.sha256(value.encode()).digest()]
    if not _matches_any(secrets.key_digests, given):
        return _rejected("bad_signature", f"{name} matches no secret in {secrets.variable}")
    return Verification("verified", f"{name} matches a secret in {secrets.variable}")


# Shared by the schemes


def _judge(
    secrets: ProviderSecrets,
    signature_name: str,
    expected: list[bytes],
    given: list[bytes],
    timestamp_name: str,
    timestamp: str,
    now: float,
) -> Verification:
    # The signature is judged before the clock, so "stale" is only ever said of a delivery
    # that is authentic but old (a replay or clock skew), never of a forgery.
    if not _matches_any(expected, given):
        return _rejected(
            "bad_signature", f"{signature_name} matches no secret in {secrets.variable}"
        )
    age = now - int(timestamp)
    if abs(age) > TOLERANCE_SECONDS:
        when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
        return _rejected(
            "stale_timestamp", f"{timestamp_name} is {when}; {TOLERANCE_SECONDS} s allowed"
        )
    return Verification("verified", f"{signature_name} matches a secret in {secrets.variable}")


def _matches_any(expected: Sequence[bytes], given: Sequence[bytes]) -> bool:
    # Every pair is compared, in constant time, with no early exit.
    results = [hmac.compare_digest(e, g) for e in expected for g in given]
    return any(results)


def _hmac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _key(scheme: Scheme, secret: str, where: str) -> bytes:
    if scheme is Scheme.STANDARD:
        return _standard_key(secret, where)
    # Stripe signs with the secret string itself (whsec_ included); a shared secret is text.
    return secret.encode()


def _rejected(code: FailureCode, message: str) -> Verification:
    return Verification("rejected", message, code)
