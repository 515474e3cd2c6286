"""Auth on a real edge (tests/support/secure.py): 401 at the handshake, modes, resume
tokens bound to their principal, tool results bound to their session, no token in a log."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from services.edge.auth import hash_api_key
from shared.audio import tone
from tests.support.metrics import scrape
from tests.support.secure import (
    FOREIGN_RSA_KEY,
    HS_SECRET,
    api_key,
    connect,
    jwt_for,
    started,
)

UTTERANCE = tone(220, 1.0, 16000) + b"\x00\x00" * 8000
PROBE_TOOL = {"name": "utterance_probe", "description": "Says who owns this session",
              "parameters": {"type": "object", "properties": {}}, "timeout_ms": 20000}

# Made when a test runs, not at collection: the suite runs longer than a token lives.
BAD_TOKENS = {
    "none": lambda: None,
    "unknown api key": lambda: "key-of-mallory",
    "a key's hash instead of the key": lambda: hash_api_key(api_key("alice")),
    "expired": lambda: jwt_for("alice", exp=1_000_000_000),
    "not yet valid": lambda: jwt_for("alice", nbf=4_000_000_000, exp=4_000_000_300),
    "foreign key, same kid": lambda: jwt_for("alice", key=FOREIGN_RSA_KEY),
    "wrong audience": lambda: jwt_for("alice", aud="another-service"),
    "wrong issuer": lambda: jwt_for("alice", iss="https://evil.test"),
    "hs256 with a wrong secret": lambda: jwt_for("alice", key="x" * 48, algorithm="HS256", kid=None),
    "tampered": lambda: jwt_for("alice")[:-6] + "AAAAAA",
}
USED_SECRETS: list[str] = []


@pytest.mark.parametrize("path", ["/v1/stream", "/v1/realtime"])
@pytest.mark.parametrize("name", list(BAD_TOKENS))
async def test_bad_credentials_get_401_at_the_handshake(secure_parley, name, path):
    token = BAD_TOKENS[name]()
    before = scrape(secure_parley.url() + "/metrics")["parley_auth_refused_total"]
    for query in (False, True):
        with pytest.raises(InvalidStatus) as refused:
            await connect(secure_parley, token, query=query, path=path)
        assert refused.value.response.status_code == 401
    assert scrape(secure_parley.url() + "/metrics")["parley_auth_refused_total"] == before + 2
    if token:
        USED_SECRETS.append(token)


@pytest.mark.parametrize("make_token,query", [
    (lambda: api_key("alice"), False),
    (lambda: api_key("alice"), True),
    (lambda: jwt_for("carol"), False),  # RS256 from the JWKS file, by kid
    (lambda: jwt_for("carol", algorithm="HS256", kid=None), True),
], ids=["api key", "api key in the query", "RS256 by JWKS", "HS256 in the query"])
async def test_good_credentials_start_a_session(secure_parley, make_token, query):
    token = make_token()
    client = await connect(secure_parley, token, query=query)
    reply = await client.start(language="en", target_language="es")
    assert reply["type"] == "session.started", reply
    await client.close()
    USED_SECRETS.append(token)


async def test_a_mode_the_principal_may_not_use_is_forbidden(secure_parley):
    client = await connect(secure_parley, api_key("translator"))
    reply = await client.start(mode="assistant", language="en")
    assert reply["type"] == "error" and reply["code"] == "forbidden" and reply["fatal"]
    assert (await client.closed)[0] == 4403
    (await started(secure_parley, "translator")).drop()  # translate mode is fine


async def test_a_resume_token_works_only_for_its_principal(secure_parley):
    alice = await started(secure_parley, "alice")
    session = alice.events[0]
    alice.drop()
    bob = await connect(secure_parley, api_key("bob"))
    await bob.send({"type": "session.resume", "session_id": session["session_id"],
                    "resume_token": session["resume_token"], "last_seq": 0})
    error = await bob.wait_type("error")
    assert error["code"] == "session_not_found" and error["fatal"]
    assert (await bob.closed)[0] == 4404
    again = await connect(secure_parley, api_key("alice"))  # the owner still can
    await again.send({"type": "session.resume", "session_id": session["session_id"],
                      "resume_token": session["resume_token"], "last_seq": 0})
    assert (await again.wait_type("session.started"))["resumed"] is True
    await again.send({"type": "session.end"})
    await again.wait_type("session.ended")
    await again.closed


async def test_a_tool_result_for_another_sessions_call_never_reaches_it(secure_parley):
    """tool.result carries no session: the edge answers the caller's own session only, so a
    call_id of someone else's call is unknown here (tool_error) and that turn is untouched."""
    alice = await started(secure_parley, "alice", mode="assistant", tools=[PROBE_TOOL])
    bob = await started(secure_parley, "bob", mode="assistant", tools=[PROBE_TOOL])
    await alice.stream(UTTERANCE, realtime=False)
    call = await alice.wait_type("tool.call")
    await bob.send({"type": "tool.result", "call_id": call["call_id"], "output": {"owner": "bob"}})
    error = await bob.wait_type("error")
    assert error["code"] == "tool_error" and not error["fatal"]
    await alice.send({"type": "tool.result", "call_id": call["call_id"], "output": {"owner": "alice"}})
    done = await alice.wait_type("response.done")
    assert done["status"] == "completed" and "owner alice" in done["text"]
    assert not any("bob" in str(e) for e in alice.events)
    assert not bob.of_type("tool.call")
    await alice.close()
    await bob.close()


async def test_a_client_cannot_register_a_tool_on_another_session(secure_parley):
    """tool.register names no session (a `session_id` in it is an unknown field, ignored):
    Bob's registration lands on Bob's session, and Alice's turn never calls his tool."""
    alice = await started(secure_parley, "alice", mode="assistant", target_language=None)
    bob = await started(secure_parley, "bob", mode="assistant", target_language=None)
    await bob.send({"type": "tool.register", **PROBE_TOOL, "session_id": alice.events[0]["session_id"]})
    await bob.send({"type": "ping", "id": "registered"})
    await bob.wait_type("pong", id="registered")
    await alice.stream(UTTERANCE, realtime=False)
    assert (await alice.wait_type("response.done"))["status"] == "completed"
    assert not alice.of_type("tool.call")
    await bob.stream(UTTERANCE, realtime=False)
    call = await bob.wait_type("tool.call")  # his own session has it
    assert call["name"] == PROBE_TOOL["name"]
    await bob.send({"type": "tool.result", "call_id": call["call_id"], "output": {"owner": "bob"}})
    assert "owner bob" in (await bob.wait_type("response.done"))["text"]
    assert not alice.of_type("tool.call")
    await alice.close()
    await bob.close()


async def test_a_room_belongs_to_its_principal(secure_parley):
    """Bob naming Alice's room joins a room of his own: he never hears her, she never hears
    him, while another of Alice's sessions in that room does."""
    speaker = await started(secure_parley, "alice", target_language=None, room="lobby")
    listener = await started(secure_parley, "alice", language="es", target_language=None, room="lobby")
    stranger = await started(secure_parley, "bob", language="es", target_language=None, room="lobby")
    sid = speaker.events[0]["session_id"]
    await asyncio.sleep(0.5)  # the route update reaches the speaker's STT owner
    await speaker.stream(UTTERANCE, realtime=False)
    assert (await listener.wait_type("translation", timeout=20, speaker=sid))["target_language"] == "es"
    await listener.wait_type("audio.done", timeout=10)
    await stranger.stream(UTTERANCE, realtime=False)
    await stranger.wait_type("transcript.final", timeout=20)
    await asyncio.sleep(1.0)  # anything misrouted would be here by now
    assert not any(e.get("speaker") == sid for e in stranger.events)
    bob_sid = stranger.events[0]["session_id"]
    assert not any(e.get("speaker") == bob_sid for e in (*speaker.events, *listener.events))
    for client in (speaker, listener, stranger):
        await client.close()


def test_no_token_or_key_is_ever_logged(secure_parley):
    log = (secure_parley.log_dir / "edge.log").read_text(errors="replace")
    assert "handshake refused" in log and "auth is enabled" in log
    for secret in [*USED_SECRETS, HS_SECRET, *(api_key(p) for p in ("alice", "bob", "translator"))]:
        assert secret not in log
