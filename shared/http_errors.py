"""Mapping of HTTP failures onto the project's error vocabulary (pure).

OpenAI's error body is read here too: three adapters in three services speak to it."""

from __future__ import annotations

import json

import httpx

from shared.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderQuotaError,
    ProviderTimeout,
    ProviderUnavailable,
)
from shared.secrets import Secret


def redact(text: str, secret: Secret | None) -> str:
    """`text` without the secret's value: vendors sometimes echo a rejected key."""
    value = secret.reveal() if secret else ""
    return text.replace(value, "********") if value else text


def status_error(vendor: str, status: int, detail: str = "") -> ProviderError:
    """The project's error for a vendor's HTTP status (`detail` must already be safe)."""
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        return ProviderAuthError(f"{vendor} refused the key ({status}){suffix}")
    if status == 429:
        return ProviderQuotaError(f"{vendor} rate limit or quota ({status}){suffix}")
    if status == 408:
        return ProviderTimeout(f"{vendor} timed out the request ({status}){suffix}")
    if status >= 500:
        return ProviderUnavailable(f"{vendor} is unavailable ({status}){suffix}")
    return ProviderError(f"{vendor} rejected the request ({status}){suffix}")


def transport_error(vendor: str, exc: BaseException) -> ProviderError:
    """Timeouts are retryable as timeouts; any other transport failure as unavailability."""
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return ProviderTimeout(f"{vendor} did not answer in time")
    if isinstance(exc, httpx.DecodingError):  # the body arrived but cannot be decoded
        return ProviderBadResponse(f"{vendor} sent an undecodable body")
    return ProviderUnavailable(f"{vendor} unreachable ({type(exc).__name__})")


_DETAIL_CHARS = 120


def openai_error(status: int, body: bytes, secret: Secret | None = None) -> ProviderError:
    """Map an OpenAI error answer (`{"error": {"code", "type", "message"}}`).

    Only `code`/`type` go into the text: a 401's message quotes part of the key.
    """
    try:
        error = json.loads(body)["error"]
        detail = str(error.get("code") or error.get("type") or "")
    except (ValueError, TypeError, KeyError, AttributeError):
        detail = ""
    return status_error("openai", status, redact(detail[:_DETAIL_CHARS], secret))
