"""A Parley system with auth and rate limits configured, and credentials for its principals."""

from __future__ import annotations

import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from services.edge.auth import hash_api_key
from tests.support.client import ProtocolClient
from tests.support.system import ParleySystem

HS_SECRET = "test-secret-0123456789-abcdefghij-0123456789"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FOREIGN_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
AUDIENCE, ISSUER = "parley", "https://id.test"

# principal → its [auth.principals.<name>] settings (besides its key)
PRINCIPALS = {
    "alice": {},
    "bob": {},
    "translator": {"modes": ["translate"]},
    "flooder": {"messages_per_second": 20},
    "talker": {"audio_seconds_per_minute": 3},
    "dialer": {"connections_per_minute": 3},
    "realtime_dialer": {"connections_per_minute": 1},
    "pair": {"max_sessions": 2},
}


def api_key(principal: str) -> str:
    return f"key-of-{principal}-7f3a9c"


def jwt_for(sub: str, *, key=RSA_KEY, algorithm: str = "RS256", kid: str | None = "k1", **claims) -> str:
    now = time.time()
    payload = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "exp": now + 300, "nbf": now - 5, **claims}
    signing_key = HS_SECRET if algorithm == "HS256" and key is RSA_KEY else key
    return jwt.encode(payload, signing_key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def write_config(directory, global_max_sessions: int) -> str:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    lines = ["[auth.jwt]", f'jwks_file = "{jwks}"', f'audience = "{AUDIENCE}"', f'issuer = "{ISSUER}"',
             "[limits]", f"global_max_sessions = {global_max_sessions}"]
    for name, settings in PRINCIPALS.items():
        lines += [f"[auth.principals.{name}]", f'api_key_sha256 = ["{hash_api_key(api_key(name))}"]']
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = directory / f"parley-{global_max_sessions}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def secure_env(config: str) -> dict:
    return {"PARLEY_PREFIX": "secure", "PARLEY_CONFIG": config, "PARLEY_AUTH_HS256_SECRET": HS_SECRET,
            "PARLEY_START_TIMEOUT_S": "5", "OPENAI_API_KEY": ""}


def ws_url(system: ParleySystem, path: str = "/v1/stream") -> str:
    return system.ws_url().replace("/v1/stream", path)


async def connect(system: ParleySystem, token: str | None, *, query: bool = False,
                  path: str = "/v1/stream") -> ProtocolClient:
    url = ws_url(system, path)
    if token and query:
        return await ProtocolClient.connect(f"{url}?token={token}")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await ProtocolClient.connect(url, additional_headers=headers)


async def started(system: ParleySystem, principal: str, **fields) -> ProtocolClient:
    client = await connect(system, api_key(principal))
    reply = await client.start(**{"language": "en", "target_language": "es", **fields})
    assert reply["type"] == "session.started", reply
    return client
