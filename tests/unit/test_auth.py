"""API keys and JWT checks (services/edge/auth.py): tables, time passed in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.edge.auth import (
    ANONYMOUS_NAME,
    AuthConfig,
    AuthError,
    JwtConfig,
    Principal,
    PrincipalLimits,
    authenticate,
    hash_api_key,
    token_from,
)
from shared.secrets import Secret

NOW = 1_700_000_000.0
SECRET = "s" * 64
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
GOOD = {"sub": "alice", "aud": "parley", "iss": "https://id.example", "exp": NOW + 300, "nbf": NOW - 10}

JWT_CONFIG = JwtConfig(hs256_secret=Secret(SECRET), rsa_keys={"k1": RSA_KEY.public_key()},
                       audience=("parley",), issuer="https://id.example", leeway_s=30)
CONFIG = AuthConfig(
    api_keys={hash_api_key("key-of-bob"): "bob"},
    principals={"bob": Principal("bob", frozenset({"translate"}), PrincipalLimits(max_sessions=2))},
    jwt=JWT_CONFIG,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, claims: dict, key: bytes | None) -> str:
    """A JWT built by hand, for what a library refuses to make (alg none, HS with a PEM)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64(signature)}"


def hs(claims: dict, secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def rs(claims: dict, key=RSA_KEY, kid: str | None = "k1") -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def tamper(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, b64(json.dumps({**claims, **changes}).encode()), signature])


ACCEPTED = [
    ("hs256", hs(GOOD), "alice"),
    ("rs256 by kid", rs(GOOD), "alice"),
    ("expired within leeway", hs({**GOOD, "exp": NOW - 20}), "alice"),
    ("nbf within leeway", hs({**GOOD, "nbf": NOW + 20}), "alice"),
    ("no nbf", hs({k: v for k, v in GOOD.items() if k != "nbf"}), "alice"),
    ("aud as a list", hs({**GOOD, "aud": ["other", "parley"]}), "alice"),
    ("api key", "key-of-bob", "bob"),
]


@pytest.mark.parametrize("token,principal", [(t, p) for _, t, p in ACCEPTED], ids=[n for n, _, _ in ACCEPTED])
def test_accepted_credentials(token, principal):
    assert authenticate(CONFIG, token, NOW).name == principal


REFUSED = [
    ("missing", None, "no credentials"),
    ("empty", "", "no credentials"),
    ("unknown api key", "key-of-mallory", "unknown API key"),
    ("expired", hs({**GOOD, "exp": NOW - 31}), "expired"),
    ("no exp", hs({k: v for k, v in GOOD.items() if k != "exp"}), "no 'exp'"),
    ("exp not a number", hs({**GOOD, "exp": "tomorrow"}), "not a number"),
    ("exp a boolean", hs({**GOOD, "exp": True}), "not a number"),
    ("not yet valid", hs({**GOOD, "nbf": NOW + 31}), "not valid yet"),
    ("wrong audience", hs({**GOOD, "aud": "someone-else"}), "audience"),
    ("no audience", hs({k: v for k, v in GOOD.items() if k != "aud"}), "audience"),
    ("wrong issuer", hs({**GOOD, "iss": "https://evil.example"}), "issuer"),
    ("no subject", hs({k: v for k, v in GOOD.items() if k != "sub"}), "principal"),
    ("empty subject", hs({**GOOD, "sub": ""}), "principal"),
    ("wrong hs secret", hs(GOOD, "x" * 64), "signature"),
    ("wrong rsa key", rs(GOOD, OTHER_RSA_KEY), "signature"),
    ("unknown kid", rs(GOOD, kid="k2"), "unknown key id"),
    ("tampered payload hs", tamper(hs(GOOD), sub="root"), "signature"),
    ("tampered payload rs", tamper(rs(GOOD), exp=NOW + 10**6), "signature"),
    ("alg none", raw_token({"alg": "none", "typ": "JWT"}, GOOD, None), "not accepted"),
    ("alg None", raw_token({"alg": "None"}, GOOD, None), "not accepted"),
    ("alg HS512", jwt.encode(GOOD, SECRET, algorithm="HS512"), "not accepted"),
    ("hs256 signed with the rsa public key", raw_token({"alg": "HS256"}, GOOD, PUBLIC_PEM), "signature"),
    ("garbage with dots", "a.b.c", "malformed"),
    ("three dots", "a.b.c.d", "unknown API key"),
    ("not ascii (a header decoded with surrogates)", "4f1c\udce2\udc80\udca6", "malformed credentials"),
    ("control characters", "key\x00", "malformed credentials"),
    ("huge", "k" * 9000, "malformed credentials"),
]


@pytest.mark.parametrize("token,reason", [(t, r) for _, t, r in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_refused_credentials(token, reason):
    with pytest.raises(AuthError) as refused:
        authenticate(CONFIG, token, NOW)
    assert reason in str(refused.value)
    if token:
        assert token not in str(refused.value)  # never log a token


def test_alg_confusion_with_only_rsa_configured():
    """An HS256 token whose secret is the public key must not pass where only RS256 is set up."""
    config = AuthConfig(jwt=JwtConfig(rsa_keys={None: RSA_KEY.public_key()}))
    with pytest.raises(AuthError, match="not accepted"):
        authenticate(config, raw_token({"alg": "HS256"}, {**GOOD, "aud": None}, PUBLIC_PEM), NOW)
    assert authenticate(config, rs(GOOD, kid="any"), NOW).name == "alice"  # a PEM key has no kid


def test_rs_token_is_refused_where_only_hs_is_configured():
    config = AuthConfig(jwt=JwtConfig(hs256_secret=Secret(SECRET)))
    with pytest.raises(AuthError, match="not accepted"):
        authenticate(config, rs(GOOD), NOW)


def test_configured_principal_claim():
    config = AuthConfig(jwt=JwtConfig(hs256_secret=Secret(SECRET), principal_claim="tenant"))
    assert authenticate(config, hs({**GOOD, "tenant": "acme"}), NOW).name == "acme"


def test_principals_get_their_modes_and_limits():
    bob = authenticate(CONFIG, "key-of-bob", NOW)
    assert bob.modes == frozenset({"translate"}) and bob.limits.max_sessions == 2
    alice = authenticate(CONFIG, hs(GOOD), NOW)  # not listed: the defaults
    assert alice.modes == frozenset({"translate", "assistant"}) and alice.limits == PrincipalLimits()


def test_disabled_auth_accepts_anything_as_anonymous():
    config = AuthConfig(default_limits=PrincipalLimits(messages_per_second=5))
    assert not config.enabled
    for token in (None, "", "whatever", hs(GOOD)):
        principal = authenticate(config, token, NOW)
        assert principal.name == ANONYMOUS_NAME and principal.limits.messages_per_second == 5


def test_api_keys_are_sha256_hex():
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("headers,path,token", [
    ({"Authorization": "Bearer abc"}, "/v1/stream", "abc"),
    ({"Authorization": "bearer  abc "}, "/v1/stream", "abc"),
    ({}, "/v1/stream?token=xyz", "xyz"),
    ({"Authorization": "Bearer abc"}, "/v1/stream?token=xyz", "abc"),
    ({"Authorization": "Basic abc"}, "/v1/stream", None),
    ({"Authorization": "Bearer "}, "/v1/realtime?model=m&token=q", "q"),
    ({}, "/v1/stream?token=", None),
    ({}, "/v1/stream", None),
])
def test_token_from_header_or_query(headers, path, token):
    assert token_from(headers, path) == token


def test_config_validation():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtConfig(hs256_secret=Secret("short"))
    with pytest.raises(ValueError):
        PrincipalLimits(messages_per_second=-1)
    with pytest.raises(ValueError):
        PrincipalLimits(audio_seconds_per_minute=0.5)
    assert repr(JWT_CONFIG).count(SECRET) == 0


_part = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=60)
random_tokens = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),  # as headers arrive
    st.tuples(_part, _part, _part).map(".".join),  # JWT-shaped
    st.tuples(st.just(hs(GOOD).split(".")[0]), _part, _part).map(".".join),  # a real header
)


@given(random_tokens)
def test_any_token_is_refused_cleanly(token):
    """Whatever arrives at the handshake, the answer is a principal or AuthError (a 401), never a crash."""
    try:
        authenticate(CONFIG, token, NOW)
    except AuthError:
        pass
