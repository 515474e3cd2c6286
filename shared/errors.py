"""The project's own error vocabulary.

Adapters translate vendor and engine failures into these at their boundary
(``raise ProviderTimeout("…") from exc``), so that retry and fallback decide on
``retryable`` alone, in one place. ``code`` is a PROTOCOL.md error code; messages are
meant for logs, never for clients.
"""

from __future__ import annotations

ERROR_CODES = frozenset(
    {
        "invalid_message",
        "invalid_audio",
        "unauthorized",
        "forbidden",
        "rate_limited",
        "session_not_found",
        "session_expired",
        "provider_unavailable",
        "tool_error",
        "tool_timeout",
        "internal",
    }
)


class ParleyError(Exception):
    """Base of every error Parley raises on purpose.

    Subclasses set their code and retryability in the class statement:
    ``class ProviderTimeout(ProviderError, retryable=True)``.
    """

    code: str = "internal"
    retryable: bool = False

    def __init__(self, message: str = "", *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:  # this one failure knows better than its class
            self.retryable = retryable

    def __init_subclass__(cls, code: str | None = None, retryable: bool | None = None, **kw):
        super().__init_subclass__(**kw)
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}")
            cls.code = code
        if retryable is not None:
            cls.retryable = retryable


class ProviderError(ParleyError, code="provider_unavailable"):
    """A provider (cloud vendor or local engine) could not do the work."""


class ProviderTimeout(ProviderError, retryable=True):
    """A provider did not answer in time; another attempt may succeed."""


class ProviderUnavailable(ProviderError, retryable=True):
    """Connection refused or reset, 5xx: the vendor is down or overloaded for now."""


class ProviderAuthError(ProviderError):
    """Bad or revoked key (401/403, AssemblyAI close 1008): retrying cannot help; the
    fallback chain moves on and the breaker opens."""


class ProviderQuotaError(ProviderError):
    """Rate limit or exhausted quota (429): the chain moves on rather than waiting."""


class ProviderBadResponse(ProviderError):
    """The vendor answered with something that is not its documented shape."""
