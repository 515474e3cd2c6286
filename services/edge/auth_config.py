"""Loading `[auth]` and `[limits]` from the `PARLEY_CONFIG` TOML file and the environment.

```toml
[auth]
modes = ["translate", "assistant"]     # for principals not listed below (JWT subjects)

[auth.jwt]
hs256_secret_env = "PARLEY_JWT_SECRET" # the NAME of an environment variable with the secret
rs256_public_key_file = "/etc/parley/jwt.pem"
jwks_file = "/etc/parley/jwks.json"
audience = "parley"                    # a string or a list
issuer = "https://id.example.com/"
principal_claim = "sub"
leeway_s = 30

[auth.principals.acme]
api_key_sha256 = ["<sha256 hex of the key>"]
modes = ["translate"]
max_sessions = 5                       # any [limits] field; the others come from [limits]

[limits]                               # every principal without its own; 0 = unlimited
max_sessions = 10
connections_per_minute = 60
audio_seconds_per_minute = 600
messages_per_second = 200
global_max_sessions = 1000
```

The environment wins over the file: `PARLEY_AUTH_HS256_SECRET` (the secret itself),
`PARLEY_AUTH_RS256_PUBLIC_KEY_FILE`, `PARLEY_AUTH_JWKS_FILE`, `PARLEY_AUTH_AUDIENCE`
(comma-separated), `PARLEY_AUTH_ISSUER`, `PARLEY_AUTH_API_KEYS` (`name:sha256hex,…`),
`PARLEY_LIMIT_<FIELD>` for each `[limits]` field (`PARLEY_LIMIT_GLOBAL_MAX_SESSIONS`, …).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from services.edge.auth import MODES, AuthConfig, JwtConfig, Principal, PrincipalLimits
from shared.secrets import Secret

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_LIMIT_FIELDS = {f.name for f in fields(PrincipalLimits)}
_JWT_KEYS = {"hs256_secret_env", "rs256_public_key_file", "jwks_file", "audience", "issuer",
             "principal_claim", "leeway_s"}


def load_auth_config(env: dict[str, str] | None = None) -> AuthConfig:
    env = dict(os.environ if env is None else env)
    document: dict[str, Any] = {}
    if env.get("PARLEY_CONFIG"):
        with Path(env["PARLEY_CONFIG"]).open("rb") as handle:
            document = tomllib.load(handle)
    auth = dict(document.get("auth", {}))
    limits = {**document.get("limits", {}), **_env_limits(env)}
    global_max = int(limits.pop("global_max_sessions", 0))
    defaults = _limits(limits, PrincipalLimits(), "[limits]")
    modes = _modes(auth.pop("modes", sorted(MODES)), "[auth] modes")
    jwt_config = _jwt(dict(auth.pop("jwt", {})), env)
    principals, api_keys = _principals(dict(auth.pop("principals", {})), modes, defaults)
    if auth:
        raise ValueError(f"[auth]: unknown settings {sorted(auth)}")
    for name, digest in _env_api_keys(env.get("PARLEY_AUTH_API_KEYS", "")):
        api_keys[digest] = name
    if global_max < 0:
        raise ValueError("global_max_sessions must not be negative")
    return AuthConfig(api_keys, principals, jwt_config, modes, defaults, global_max)


def _env_limits(env: dict[str, str]) -> dict[str, float]:
    names = _LIMIT_FIELDS | {"global_max_sessions"}
    return {n: float(env[f"PARLEY_LIMIT_{n.upper()}"]) for n in names if env.get(f"PARLEY_LIMIT_{n.upper()}")}


def _limits(table: dict[str, Any], base: PrincipalLimits, where: str) -> PrincipalLimits:
    unknown = set(table) - _LIMIT_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown limits {sorted(unknown)}")
    values = {k: (int(v) if k == "max_sessions" else float(v)) for k, v in table.items()}
    return replace(base, **values)


def _modes(raw: Any, where: str) -> frozenset[str]:
    if not isinstance(raw, list) or not set(raw) <= MODES:
        raise ValueError(f"{where} must be a list of {sorted(MODES)}")
    return frozenset(raw)


def _principals(table: dict[str, Any], modes: frozenset[str],
                defaults: PrincipalLimits) -> tuple[dict[str, Principal], dict[str, str]]:
    principals: dict[str, Principal] = {}
    api_keys: dict[str, str] = {}
    for name, entry in table.items():
        entry = dict(entry)
        digests = entry.pop("api_key_sha256", [])
        digests = [digests] if isinstance(digests, str) else digests
        own_modes = _modes(entry.pop("modes"), f"[auth.principals.{name}] modes") if "modes" in entry else modes
        principals[name] = Principal(name, own_modes, _limits(entry, defaults, f"[auth.principals.{name}]"))
        for digest in digests:
            api_keys[_digest(digest, name)] = name
    return principals, api_keys


def _digest(raw: Any, name: str) -> str:
    digest = str(raw).strip().lower()
    if not _SHA256_HEX.fullmatch(digest):
        raise ValueError(f"principal {name!r}: api_key_sha256 must be 64 hex digits (the SHA-256 "
                         "of the key), never the key itself")
    return digest


def _env_api_keys(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (i.strip() for i in raw.split(","))):
        name, _, digest = item.rpartition(":")
        if not name:
            raise ValueError("PARLEY_AUTH_API_KEYS entries are name:sha256hex")
        pairs.append((name, _digest(digest, name)))
    return pairs


def _jwt(table: dict[str, Any], env: dict[str, str]) -> JwtConfig:
    unknown = set(table) - _JWT_KEYS
    if unknown:
        raise ValueError(f"[auth.jwt]: unknown settings {sorted(unknown)}")
    secret = env.get("PARLEY_AUTH_HS256_SECRET")
    if not secret and table.get("hs256_secret_env"):
        secret = env.get(table["hs256_secret_env"])
        if not secret:
            raise ValueError(f"[auth.jwt] hs256_secret_env names {table['hs256_secret_env']!r}, which is not set")
    keys: dict[str | None, RSAPublicKey] = {}
    pem = env.get("PARLEY_AUTH_RS256_PUBLIC_KEY_FILE") or table.get("rs256_public_key_file")
    if pem:
        keys[None] = load_pem_public_key(Path(pem))
    jwks = env.get("PARLEY_AUTH_JWKS_FILE") or table.get("jwks_file")
    if jwks:
        keys.update(load_jwks(Path(jwks)))
    audience = env.get("PARLEY_AUTH_AUDIENCE") or table.get("audience") or ()
    audience = tuple(a.strip() for a in audience.split(",")) if isinstance(audience, str) else tuple(audience)
    return JwtConfig(
        hs256_secret=Secret(secret) if secret else None, rsa_keys=keys, audience=audience,
        issuer=env.get("PARLEY_AUTH_ISSUER") or table.get("issuer"),
        leeway_s=float(table.get("leeway_s", 30.0)),
        principal_claim=str(table.get("principal_claim", "sub")),
    )


def load_pem_public_key(path: Path) -> RSAPublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"{path}: not an RSA public key (RS256 needs one)")
    return key


def load_jwks(path: Path) -> dict[str | None, RSAPublicKey]:
    """RSA signing keys of a JWKS document, by `kid`; other keys are ignored."""
    document = json.loads(path.read_text())
    keys: dict[str | None, RSAPublicKey] = {}
    for entry in document.get("keys", []):
        if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        key = jwt.PyJWK(entry, algorithm="RS256").key
        key = key.public_key() if isinstance(key, RSAPrivateKey) else key
        keys[entry.get("kid")] = key
    if not keys:
        raise ValueError(f"{path}: no RSA signing key")
    return keys
