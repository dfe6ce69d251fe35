"""Webhook authenticity: the three signing schemes, rotation, clock tolerance, configuration."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import pytest
from starlette.datastructures import Headers

from cascade.webhooks.signatures import (
    ConfigurationError,
    ProviderSecrets,
    Scheme,
    Verification,
    sign_standard,
    sign_stripe,
    verify,
)

NOW = 1_700_000_000
BODY = b'{"event":"email_sent","lead_id":42}'
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
STRIPE_SECRET = "whsec_stripeStyleSecretThatIsNotBase64Decoded"  # noqa: S105 (test data)


def provider(scheme: Scheme, *secrets: str) -> ProviderSecrets:
    return ProviderSecrets.from_values("acme", secrets, scheme=scheme)


def standard_headers(secret: str = NEW, timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return sign_standard(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", timestamp, body)


def stripe_headers(secret: str = STRIPE_SECRET, timestamp: int = NOW) -> dict[str, str]:
    return {"Stripe-Signature": sign_stripe(secret, timestamp, BODY)}


def assert_rejected(verification: Verification, code: str, *named: str) -> None:
    assert (verification.status, verification.code) == ("rejected", code), verification
    assert not verification.accepted
    for text in named:
        assert text in verification.message


# A published test vector: standard-webhooks/standard-webhooks,
# libraries/javascript/src/webhook.test.ts, test "sign function works" (the same key, id and
# payload appear throughout the reference libraries' tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (published test data)
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_standard__matches_the_published_test_vector() -> None:
    headers = sign_standard(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)

    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_verify_standard__accepts_the_published_test_vector() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }

    verification = verify(
        provider(Scheme.STANDARD, VECTOR_SECRET), headers, VECTOR_BODY, 1614265330
    )

    assert verification.status == "verified"


def test_verify_standard__accepts_a_valid_signature() -> None:
    verification = verify(provider(Scheme.STANDARD, NEW), standard_headers(), BODY, NOW)

    assert (verification.status, verification.code, verification.accepted) == (
        "verified",
        None,
        True,
    )


def test_verify_standard__rejects_a_tampered_body() -> None:
    verification = verify(provider(Scheme.STANDARD, NEW), standard_headers(), BODY + b" ", NOW)

    assert_rejected(verification, "bad_signature", "webhook-signature", "WEBHOOK_SECRET_ACME")


def test_verify_standard__rejects_a_tampered_signature() -> None:
    headers = standard_headers()
    signature = headers["webhook-signature"]
    flipped = "A" if signature[10] != "A" else "B"
    headers["webhook-signature"] = signature[:10] + flipped + signature[11:]

    verification = verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW)

    assert_rejected(verification, "bad_signature", "webhook-signature")


def test_verify_standard__reads_the_first_copy_of_a_repeated_header() -> None:
    # A replay with a fresh webhook-id placed before the signed one: a delivery's key reads
    # the first copy, so the signature must be checked against it too.
    signed = standard_headers()
    repeated = Headers(raw=[(b"webhook-id", b"fresh")] + [
        (name.encode(), value.encode()) for name, value in signed.items()
    ])  # fmt: skip

    verification = verify(provider(Scheme.STANDARD, NEW), repeated, BODY, NOW)

    assert_rejected(verification, "bad_signature")


def test_verify_standard__rejects_a_signature_made_with_another_secret() -> None:
    verification = verify(provider(Scheme.STANDARD, NEW), standard_headers(OLD), BODY, NOW)

    assert_rejected(verification, "bad_signature")


def test_verify_standard__rejects_a_timestamp_swapped_under_a_valid_signature() -> None:
    headers = standard_headers(timestamp=NOW - 3600)
    headers["webhook-timestamp"] = str(NOW)  # a replay dressed up as fresh

    verification = verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW)

    assert_rejected(verification, "bad_signature")


@pytest.mark.parametrize(("offset", "words"), [(-301, "s old"), (301, "in the future")])
def test_verify_standard__rejects_a_timestamp_outside_five_minutes(offset: int, words: str) -> None:
    headers = standard_headers(timestamp=NOW + offset)

    verification = verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW)

    assert_rejected(verification, "stale_timestamp", "webhook-timestamp", words)


@pytest.mark.parametrize("offset", [-300, 300])
def test_verify_standard__accepts_a_timestamp_at_the_edge_of_the_tolerance(offset: int) -> None:
    headers = standard_headers(timestamp=NOW + offset)

    assert verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW).status == "verified"


ARABIC_INDIC_1700 = "\u0661\u0667\u0660\u0660"  # str.isdigit() and int() both accept these


@pytest.mark.parametrize(
    "timestamp", ["hello", "1700000000.5", "-1700000000", ARABIC_INDIC_1700, " ", "1e9"]
)
def test_verify_standard__rejects_a_timestamp_that_is_not_whole_seconds(timestamp: str) -> None:
    headers = standard_headers() | {"webhook-timestamp": timestamp}

    verification = verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW)

    assert_rejected(verification, "bad_timestamp", "webhook-timestamp")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_standard__names_a_missing_header(missing: str) -> None:
    headers = standard_headers()
    del headers[missing]

    verification = verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW)

    assert_rejected(verification, "missing_signature", missing)


def test_verify_standard__accepts_one_matching_signature_among_several() -> None:
    valid = standard_headers()["webhook-signature"]
    other = standard_headers(OLD)["webhook-signature"]
    headers = standard_headers() | {
        "webhook-signature": f"{other} v1a,{valid[3:]} v2,{valid[3:]} {valid} v1,bm90LWl0"
    }

    assert verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW).status == "verified"


def test_verify_standard__rejects_a_header_with_no_v1_signature() -> None:
    valid = standard_headers()["webhook-signature"]
    headers = standard_headers() | {"webhook-signature": "v1a," + valid[3:]}

    verification = verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW)

    assert_rejected(verification, "missing_signature", "v1")


def test_verify_standard__rejects_an_entry_without_a_version() -> None:
    valid = standard_headers()["webhook-signature"]
    headers = standard_headers() | {"webhook-signature": valid[3:]}

    verification = verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW)

    assert_rejected(verification, "malformed_header", "webhook-signature")


def test_verify_stripe__accepts_a_valid_signature() -> None:
    verification = verify(provider(Scheme.STRIPE, STRIPE_SECRET), stripe_headers(), BODY, NOW)

    assert verification.status == "verified"


def test_sign_stripe__is_the_hex_hmac_of_timestamp_dot_body_keyed_by_the_whole_secret() -> None:
    # Stripe keys the HMAC with the secret string as given, whsec_ prefix included.
    digest = hmac.new(STRIPE_SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256)

    assert sign_stripe(STRIPE_SECRET, NOW, BODY) == f"t={NOW},v1={digest.hexdigest()}"


def test_verify_stripe__accepts_one_of_several_v1_signatures_and_ignores_v0() -> None:
    valid = sign_stripe(STRIPE_SECRET, NOW, BODY).split(",")[1]
    wrong = sign_stripe("whsec_other", NOW, BODY).split(",")[1]
    header = f"t={NOW}, v0={valid[3:]}, {wrong}, {valid}, x9=future"

    verification = verify(
        provider(Scheme.STRIPE, STRIPE_SECRET), {"stripe-signature": header}, BODY, NOW
    )

    assert verification.status == "verified"


def test_verify_stripe__rejects_a_tampered_body() -> None:
    verification = verify(provider(Scheme.STRIPE, STRIPE_SECRET), stripe_headers(), b"{}", NOW)

    assert_rejected(verification, "bad_signature", "stripe-signature")


def test_verify_stripe__rejects_a_signature_made_with_another_secret() -> None:
    headers = stripe_headers("whsec_someoneElse")

    verification = verify(provider(Scheme.STRIPE, STRIPE_SECRET), headers, BODY, NOW)

    assert_rejected(verification, "bad_signature")


@pytest.mark.parametrize("offset", [-301, 301])
def test_verify_stripe__rejects_a_timestamp_outside_five_minutes(offset: int) -> None:
    headers = stripe_headers(timestamp=NOW + offset)

    verification = verify(provider(Scheme.STRIPE, STRIPE_SECRET), headers, BODY, NOW)

    assert_rejected(verification, "stale_timestamp", "t=")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("garbage", "malformed_header"),
        ("v1=abc", "malformed_header"),
        (f"t={NOW},t={NOW},v1=abc", "malformed_header"),
        ("t=soon,v1=abc", "bad_timestamp"),
        (f"t={NOW},v0=abc", "missing_signature"),
        ("", "missing_signature"),
    ],
)
def test_verify_stripe__rejects_a_malformed_header(header: str, code: str) -> None:
    headers = {"stripe-signature": header}

    verification = verify(provider(Scheme.STRIPE, STRIPE_SECRET), headers, BODY, NOW)

    assert_rejected(verification, code, "stripe-signature")


def test_verify_stripe__reads_the_header_it_is_told_to() -> None:
    headers = {"X-Acme-Signature": sign_stripe(STRIPE_SECRET, NOW, BODY)}
    secrets = provider(Scheme.STRIPE, STRIPE_SECRET)

    assert verify(secrets, headers, BODY, NOW, header="x-acme-signature").status == "verified"
    assert_rejected(verify(secrets, headers, BODY, NOW), "missing_signature", "stripe-signature")


def test_verify_shared_secret__accepts_the_configured_secret() -> None:
    headers = {"X-Webhook-Secret": "instantly-shared"}

    verification = verify(provider(Scheme.SHARED_SECRET, "instantly-shared"), headers, b"", NOW)

    assert verification.status == "verified"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"x-webhook-secret": "instantly-shared-but-longer"}, "bad_signature"),
        ({"x-webhook-secret": "instantly-share"}, "bad_signature"),
        ({"x-webhook-secret": ""}, "missing_signature"),
        ({}, "missing_signature"),
    ],
)
def test_verify_shared_secret__rejects_a_wrong_or_missing_secret(
    headers: dict[str, str], code: str
) -> None:
    verification = verify(provider(Scheme.SHARED_SECRET, "instantly-shared"), headers, BODY, NOW)

    assert_rejected(verification, code, "x-webhook-secret")


def test_verify_shared_secret__reads_the_header_it_is_told_to() -> None:
    headers = {"Authorization-Token": "instantly-shared"}
    secrets = provider(Scheme.SHARED_SECRET, "instantly-shared")

    verification = verify(secrets, headers, BODY, NOW, header="authorization-token")

    assert verification.status == "verified"


ROTATION_CASES = [
    (Scheme.STANDARD, standard_headers(OLD), standard_headers(NEW)),
    (Scheme.STRIPE, stripe_headers(OLD), stripe_headers(NEW)),
    (Scheme.SHARED_SECRET, {"x-webhook-secret": OLD}, {"x-webhook-secret": NEW}),
]


@pytest.mark.parametrize(("scheme", "signed_old", "signed_new"), ROTATION_CASES)
def test_verify__accepts_old_and_new_secret_during_rotation(
    scheme: Scheme, signed_old: dict[str, str], signed_new: dict[str, str]
) -> None:
    environ = {"WEBHOOK_SECRET_ACME": f"{NEW},{OLD}"}
    secrets = ProviderSecrets.from_env("acme", environ, scheme=scheme)

    assert verify(secrets, signed_old, BODY, NOW).status == "verified"
    assert verify(secrets, signed_new, BODY, NOW).status == "verified"


@pytest.mark.parametrize(("scheme", "signed_old", "signed_new"), ROTATION_CASES)
def test_verify__refuses_a_secret_removed_after_rotation(
    scheme: Scheme, signed_old: dict[str, str], signed_new: dict[str, str]
) -> None:
    secrets = ProviderSecrets.from_env("acme", {"WEBHOOK_SECRET_ACME": NEW}, scheme=scheme)

    assert_rejected(verify(secrets, signed_old, BODY, NOW), "bad_signature")
    assert verify(secrets, signed_new, BODY, NOW).status == "verified"


@pytest.mark.parametrize("scheme", list(Scheme))
def test_verify__no_secret_configured_is_unverified_not_an_error(scheme: Scheme) -> None:
    secrets = ProviderSecrets.from_env("acme", {}, scheme=scheme)

    verification = verify(secrets, {}, BODY, NOW)

    assert (verification.status, verification.code, verification.accepted) == (
        "unverified",
        None,
        True,
    )
    assert ("WEBHOOK_SECRET_ACME" if scheme is not Scheme.NONE else "signs nothing") in (
        verification.message
    )


@pytest.mark.parametrize("spelling", [str.upper, str.title, str.lower])
def test_verify__header_lookup_ignores_case(spelling: Callable[[str], str]) -> None:
    headers = {spelling(name): value for name, value in standard_headers().items()}

    assert verify(provider(Scheme.STANDARD, NEW), headers, BODY, NOW).status == "verified"


def test_from_env__reads_the_providers_upper_case_variable() -> None:
    environ = {"WEBHOOK_SECRET_HEYREACH": "shh", "WEBHOOK_SECRET_APIFY": "other"}

    secrets = ProviderSecrets.from_env("heyreach", environ, scheme=Scheme.SHARED_SECRET)

    assert (secrets.variable, secrets.keys) == ("WEBHOOK_SECRET_HEYREACH", (b"shh",))


def test_from_env__trims_whitespace_and_ignores_empty_entries() -> None:
    environ = {"WEBHOOK_SECRET_ACME": " one ,, two,  ,"}

    secrets = ProviderSecrets.from_env("acme", environ, scheme=Scheme.SHARED_SECRET)

    assert secrets.keys == (b"one", b"two")


def test_from_env__a_variable_of_only_separators_means_no_secret() -> None:
    secrets = ProviderSecrets.from_env("acme", {"WEBHOOK_SECRET_ACME": " , "}, scheme=Scheme.STRIPE)

    assert verify(secrets, {}, BODY, NOW).status == "unverified"


def test_from_env__decodes_standard_secrets_with_or_without_prefix_and_padding() -> None:
    key = b"k" * 25  # 25 bytes: base64 with padding, so the unpadded form differs
    encoded = base64.b64encode(key).decode()
    environ = {"WEBHOOK_SECRET_ACME": f"whsec_{encoded},{encoded},{encoded.rstrip('=')}"}

    secrets = ProviderSecrets.from_env("acme", environ, scheme=Scheme.STANDARD)

    assert secrets.keys == (key, key, key)


@pytest.mark.parametrize("bad", ["whsec_not*base64!", "whsec_", "whsec_ünïcode", "abcde"])
def test_from_env__refuses_a_bad_standard_secret_naming_the_entry_but_not_the_secret(
    bad: str,
) -> None:
    environ = {"WEBHOOK_SECRET_ACME": f"{NEW},{bad}"}

    with pytest.raises(ConfigurationError, match=r"WEBHOOK_SECRET_ACME entry 2") as raised:
        ProviderSecrets.from_env("acme", environ, scheme=Scheme.STANDARD)

    assert "not*base64" not in str(raised.value)
    assert "ünïcode" not in str(raised.value)
    assert "abcde" not in str(raised.value)


def test_from_env__refuses_a_secret_for_a_provider_that_signs_nothing() -> None:
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET_ACME is set"):
        ProviderSecrets.from_env("acme", {"WEBHOOK_SECRET_ACME": "x"}, scheme=Scheme.NONE)


def test_provider_secrets__repr_never_shows_the_keys() -> None:
    secrets = provider(Scheme.SHARED_SECRET, "hunter2")

    assert "hunter2" not in repr(secrets)
