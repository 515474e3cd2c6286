"""Who is connecting: API keys and JWTs → a `Principal`. Pure: no I/O, time passed in.

- API keys are known only by their SHA-256 (hex): the config never holds a key itself.
- JWTs: HS256 with a shared secret, RS256 with RSA public keys (a PEM file or a JWKS file,
  chosen by `kid`). The algorithm named in the token only selects which configured key
  family to try; each family verifies with its own algorithm alone, so `alg: none` and
  HS/RS confusion (an RSA public key used as an HMAC secret) cannot pass.
- `exp` is required; `nbf` is honoured; both with a small leeway. `aud` and `iss` are
  checked when configured. The principal is the `sub` claim (or a configured one).

Errors carry a reason fit for a log line; a token or key never appears in one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from shared.secrets import Secret

MODES = frozenset({"translate", "assistant"})
ANONYMOUS_NAME = "anonymous"
MAX_PRINCIPAL_CHARS = 256
MAX_TOKEN_CHARS = 8192
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 §3.2: at least the hash's size


class AuthError(Exception):
    """Credentials refused; the message is safe to log (it never holds the token)."""


@dataclass(frozen=True)
class PrincipalLimits:
    """Per-principal limits; 0 means unlimited."""

    max_sessions: int = 0
    connections_per_minute: float = 0.0
    audio_seconds_per_minute: float = 0.0
    messages_per_second: float = 0.0

    def __post_init__(self) -> None:
        values = (self.max_sessions, self.connections_per_minute,
                  self.audio_seconds_per_minute, self.messages_per_second)
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError("limits must be finite and not negative (0 = unlimited)")
        if 0 < self.audio_seconds_per_minute < 1:
            raise ValueError("audio_seconds_per_minute must be 0 or at least 1 (a frame holds up to 1 s)")
        if 0 < self.connections_per_minute < 1 or 0 < self.messages_per_second < 1:
            raise ValueError("connections_per_minute and messages_per_second must be 0 or at least 1")


@dataclass(frozen=True)
class Principal:
    name: str
    modes: frozenset[str] = MODES
    limits: PrincipalLimits = field(default_factory=PrincipalLimits)


ANONYMOUS = Principal(ANONYMOUS_NAME)


@dataclass(frozen=True)
class JwtConfig:
    hs256_secret: Secret | None = None
    rsa_keys: Mapping[str | None, RSAPublicKey] = field(default_factory=dict)  # kid → key; None: no kid
    audience: tuple[str, ...] = ()
    issuer: str | None = None
    leeway_s: float = 30.0
    principal_claim: str = "sub"

    def __post_init__(self) -> None:
        if self.hs256_secret and len(self.hs256_secret.reveal().encode()) < MIN_HS256_SECRET_BYTES:
            raise ValueError(f"the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        if not 0 <= self.leeway_s <= 300:
            raise ValueError("leeway_s must be between 0 and 300")

    @property
    def enabled(self) -> bool:
        return bool(self.hs256_secret) or bool(self.rsa_keys)


@dataclass(frozen=True)
class AuthConfig:
    api_keys: Mapping[str, str] = field(default_factory=dict)  # sha256 hex → principal name
    principals: Mapping[str, Principal] = field(default_factory=dict)  # configured by name
    jwt: JwtConfig = field(default_factory=JwtConfig)
    default_modes: frozenset[str] = MODES  # for principals not configured by name (JWT subjects)
    default_limits: PrincipalLimits = field(default_factory=PrincipalLimits)
    global_max_sessions: int = 0  # 0 = unlimited

    @property
    def enabled(self) -> bool:
        """Auth is on as soon as any API key or JWT key is configured."""
        return bool(self.api_keys) or self.jwt.enabled

    def principal(self, name: str) -> Principal:
        return self.principals.get(name) or Principal(name, self.default_modes, self.default_limits)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def token_from(headers: Mapping[str, str], path: str) -> str | None:
    """`Authorization: Bearer <token>`, else `?token=<token>` (browsers cannot set headers)."""
    header = headers.get("Authorization") or ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    tokens = parse_qs(urlsplit(path).query).get("token")
    return tokens[0] if tokens and tokens[0] else None


def authenticate(config: AuthConfig, token: str | None, now: float) -> Principal:
    """The principal the token stands for; `AuthError` when auth is on and it stands for none."""
    if not config.enabled:
        return config.principal(ANONYMOUS_NAME)
    if not token:
        raise AuthError("no credentials")
    if not (token.isascii() and token.isprintable()) or len(token) > MAX_TOKEN_CHARS:
        raise AuthError("malformed credentials")  # keys and JWTs are short printable ASCII
    name = config.api_keys.get(hash_api_key(token))
    if name is not None:
        return config.principal(name)
    if not config.jwt.enabled or token.count(".") != 2:
        raise AuthError("unknown API key")
    claims = verify_jwt(config.jwt, token, now)
    return config.principal(claims[config.jwt.principal_claim])


def verify_jwt(config: JwtConfig, token: str, now: float) -> dict[str, Any]:
    """The token's claims, once its signature and claims hold."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed JWT") from None
    algorithm, key = _key_for(config, header)
    try:
        # Time and audience are checked below (pure, with `now`); the signature here, with
        # exactly one algorithm allowed.
        claims = jwt.decode(token, key, algorithms=[algorithm], options={
            "verify_signature": True, "verify_exp": False, "verify_nbf": False,
            "verify_iat": False, "verify_aud": False, "verify_iss": False})
    except jwt.PyJWTError:
        raise AuthError("JWT signature or encoding invalid") from None
    check_claims(config, claims, now)
    return claims


def _key_for(config: JwtConfig, header: dict[str, Any]) -> tuple[str, Any]:
    algorithm = header.get("alg")
    if algorithm == "HS256" and config.hs256_secret:
        return "HS256", config.hs256_secret.reveal()
    if algorithm == "RS256" and config.rsa_keys:
        kid = header.get("kid")
        if kid in config.rsa_keys:
            return "RS256", config.rsa_keys[kid]
        if None in config.rsa_keys:  # a PEM key without a kid answers for any kid
            return "RS256", config.rsa_keys[None]
        raise AuthError("JWT names an unknown key id")
    raise AuthError(f"JWT algorithm {str(algorithm)[:16]!r} is not accepted")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(f"JWT claim {name!r} is not a number")
    return float(value)


def check_claims(config: JwtConfig, claims: Mapping[str, Any], now: float) -> None:
    exp, nbf = _number(claims, "exp"), _number(claims, "nbf")
    if exp is None:
        raise AuthError("JWT has no 'exp'")
    if now > exp + config.leeway_s:
        raise AuthError("JWT expired")
    if nbf is not None and now < nbf - config.leeway_s:
        raise AuthError("JWT not valid yet")
    if config.audience:
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in config.audience for a in auds):
            raise AuthError("JWT audience does not match")
    if config.issuer is not None and claims.get("iss") != config.issuer:
        raise AuthError("JWT issuer does not match")
    subject = claims.get(config.principal_claim)
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_PRINCIPAL_CHARS:
        raise AuthError(f"JWT claim {config.principal_claim!r} is not a usable principal")
