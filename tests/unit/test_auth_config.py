"""`[auth]` and `[limits]` from the TOML file and the environment (services/edge/auth_config.py)."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.edge.auth import authenticate, hash_api_key
from services.edge.auth_config import load_auth_config

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SECRET = "0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000


def write(tmp_path, text: str) -> dict:
    path = tmp_path / "parley.toml"
    path.write_text(text)
    return {"PARLEY_CONFIG": str(path)}


def test_nothing_configured_means_auth_disabled_and_no_limits():
    config = load_auth_config({})
    assert not config.enabled and config.global_max_sessions == 0
    assert config.principal("anyone").limits.max_sessions == 0


def test_principals_keys_limits_and_jwks(tmp_path):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [
        {**jwk, "kid": "k1", "use": "sig"}, {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}]}))
    env = write(tmp_path, f"""
[providers]
timeout_s = 5
[auth]
modes = ["translate"]
[auth.jwt]
hs256_secret_env = "MY_SECRET"
jwks_file = "{tmp_path / 'jwks.json'}"
audience = ["parley", "parley-eu"]
issuer = "https://id.example"
[auth.principals.acme]
api_key_sha256 = ["{hash_api_key('acme-key')}"]
modes = ["translate", "assistant"]
max_sessions = 3
[limits]
messages_per_second = 50
global_max_sessions = 100
""")
    config = load_auth_config({**env, "MY_SECRET": SECRET, "PARLEY_LIMIT_CONNECTIONS_PER_MINUTE": "30"})
    assert config.enabled and config.global_max_sessions == 100
    acme = authenticate(config, "acme-key", NOW)
    assert acme.modes == {"translate", "assistant"}
    assert (acme.limits.max_sessions, acme.limits.messages_per_second, acme.limits.connections_per_minute) == (3, 50, 30)
    claims = {"sub": "carol", "exp": NOW + 60, "aud": "parley-eu", "iss": "https://id.example"}
    carol = authenticate(config, jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1"}), NOW)
    assert carol.name == "carol" and carol.modes == {"translate"} and carol.limits.max_sessions == 0
    assert authenticate(config, jwt.encode(claims, SECRET, algorithm="HS256"), NOW).name == "carol"
    assert set(config.jwt.rsa_keys) == {"k1"}  # the symmetric key in the JWKS is ignored


def test_environment_overrides(tmp_path):
    pem = tmp_path / "key.pem"
    pem.write_bytes(KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    config = load_auth_config({
        "PARLEY_AUTH_HS256_SECRET": SECRET, "PARLEY_AUTH_RS256_PUBLIC_KEY_FILE": str(pem),
        "PARLEY_AUTH_AUDIENCE": "a,b", "PARLEY_AUTH_ISSUER": "iss",
        "PARLEY_AUTH_API_KEYS": f"dev:{hash_api_key('dev-key')}", "PARLEY_LIMIT_GLOBAL_MAX_SESSIONS": "7",
    })
    assert config.jwt.audience == ("a", "b") and config.jwt.issuer == "iss" and None in config.jwt.rsa_keys
    assert authenticate(config, "dev-key", NOW).name == "dev" and config.global_max_sessions == 7


@pytest.mark.parametrize("text,env,problem", [
    ('[auth.principals.x]\napi_key_sha256 = ["my-raw-key"]', {}, "never the key itself"),
    ('[auth.jwt]\nhs256_secret_env = "NOT_SET"', {}, "not set"),
    ('[auth.jwt]\nhs256_secret_env = "S"', {"S": "short"}, "at least 32 bytes"),
    ('[auth]\nmodes = ["chat"]', {}, "modes"),
    ('[auth]\npasswords = 1', {}, "unknown settings"),
    ('[limits]\nmessages_per_minute = 1', {}, "unknown limits"),
    ('[auth.principals.x]\nmax_sessions = -1', {}, "not negative"),
])
def test_bad_config_is_refused_at_start(tmp_path, text, env, problem):
    with pytest.raises(ValueError, match=problem):
        load_auth_config({**write(tmp_path, text), **env})
