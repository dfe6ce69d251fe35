"""Phase 1's settings, read once from the environment when a listener starts.

Seed 000's names keep their meaning (INCLUDE_CEO, INCLUDE_CFO, INCLUDE_HR, VALIDATION_PROVIDER,
VALIDATION_THRESHOLD); the waterfall's own knobs follow seed 004 §9. A bad value stops the
listener at start with a message naming the variable, rather than misbehaving later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from providers.base import Role

CatchAllPolicy = Literal["send", "hold", "reject"]

SYNC_PROVIDERS = ("peopledatalabs", "prospeo")
ASYNC_PROVIDERS = ("apify",)
KNOWN_PROVIDERS = SYNC_PROVIDERS + ASYNC_PROVIDERS

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """An environment variable holds a value Phase 1 cannot use."""


class EnrichmentSettings(BaseModel, frozen=True):
    roles: tuple[Role, ...] = ("CEO", "CFO", "HR")
    # The waterfall: providers in the order they are asked.
    providers: tuple[str, ...] = KNOWN_PROVIDERS
    # How many synchronous providers the parallel phase asks at once (seed 004: up to 5).
    fanout: int = Field(default=2, ge=1, le=5)
    confidence_threshold: float = Field(default=0.7, ge=0, le=1)
    # How long an Apify run may take before the waterfall moves on without it (seconds).
    apify_timeout: float = Field(default=900, gt=0)
    # Where providers post their webhooks back to us (the web app's address as they see it).
    public_url: str = "http://127.0.0.1:8080"
    # After this many passing failures (outage, rate limit) a provider counts as tried.
    max_provider_failures: int = Field(default=3, ge=1)
    provider_retry_seconds: float = Field(default=60, gt=0)
    validation_provider: Literal["MillionVerifier"] = "MillionVerifier"
    validation_threshold: float = Field(default=0.8, ge=0, le=1)
    catch_all_policy: CatchAllPolicy = "hold"
    unknown_retry_seconds: float = Field(default=3600, gt=0)
    max_unknown_checks: int = Field(default=3, ge=1)

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in providers if name not in KNOWN_PROVIDERS]
        if unknown:
            raise ValueError(f"unknown provider(s) {unknown}; known: {list(KNOWN_PROVIDERS)}")
        if len(set(providers)) != len(providers):
            raise ValueError("a provider is listed twice")
        return providers

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EnrichmentSettings:
        values: dict[str, object] = {
            "roles": tuple(
                role
                for role in ("CEO", "CFO", "HR")
                if _flag(environ, f"INCLUDE_{role}", default=True)
            ),
            "public_url": environ.get(
                "CASCADE_PUBLIC_URL", f"http://127.0.0.1:{environ.get('PORT', '8080')}"
            ),
        }
        names = {
            "providers": "ENRICHMENT_PROVIDERS",
            "fanout": "ENRICHMENT_FANOUT",
            "confidence_threshold": "ENRICHMENT_CONFIDENCE_THRESHOLD",
            "apify_timeout": "APIFY_RUN_TIMEOUT_SECONDS",
            "max_provider_failures": "ENRICHMENT_MAX_PROVIDER_FAILURES",
            "provider_retry_seconds": "ENRICHMENT_PROVIDER_RETRY_SECONDS",
            "validation_provider": "VALIDATION_PROVIDER",
            "validation_threshold": "VALIDATION_THRESHOLD",
            "catch_all_policy": "VERIFICATION_CATCH_ALL",
            "unknown_retry_seconds": "VERIFICATION_UNKNOWN_RETRY_SECONDS",
            "max_unknown_checks": "VERIFICATION_MAX_UNKNOWN",
        }
        for field, variable in names.items():
            raw = environ.get(variable, "").strip()
            if raw:
                values[field] = (
                    tuple(p.strip().lower() for p in raw.split(",") if p.strip())
                    if field == "providers"
                    else raw
                )
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{names.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}"
                for err in exc.errors()
            )
            raise SettingsError(f"invalid enrichment settings: {problems}") from None


def _flag(environ: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")
