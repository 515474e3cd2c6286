"""The edge's assistant state: tools as registered, the reply being heard, barge-in."""

from __future__ import annotations

from services.edge.assistant import new_state, tool_record

OBJ = {"type": "object", "properties": {"x": {"type": "string"}}}


def audio(rid: str, seconds: float, rate: int = 16000) -> dict:
    return {"type": "audio.delta", "response_id": rid, "audio": b"\x00\x00" * int(rate * seconds)}


def test_refused_tools_are_named_and_the_rest_kept_in_order():
    tools = (tool_record("b", "", OBJ, None), tool_record("bad", "", {"type": "string"}, None),
             tool_record("a", "", OBJ, 2000))
    state, problems = new_state("s1", "hi", tools, [])
    assert list(state.tools) == ["b", "a"] and len(problems) == 1 and "bad" in problems[0]
    config = state.config("en", 16000, None)
    assert [t.name for t in config.tools] == ["b", "a"] and config.tools[1].timeout_s == 2.0
    assert state.unregister("b") and not state.unregister("b")


def test_a_reply_is_heard_until_its_audio_has_played_out():
    state, _ = new_state("s1", "", (), [])
    assert state.talking(0.0) is None
    assert state.should_send({"type": "response.text", "response_id": "r1", "text": "Hi."}, 0.0, 16000)
    assert state.talking(0.0) == "r1"
    state.should_send(audio("r1", 2.0), 0.0, 16000)
    state.should_send({"type": "response.done", "response_id": "r1", "status": "completed"}, 0.1, 16000)
    assert state.talking(1.9) == "r1" and state.talking(2.1) is None


def test_audio_of_a_cancelled_reply_is_dropped_but_other_events_pass():
    state, _ = new_state("s1", "", (), [])
    state.should_send(audio("r1", 1.0), 0.0, 16000)
    state.cancel("r1")
    assert state.talking(0.1) is None
    assert not state.should_send(audio("r1", 1.0), 0.2, 16000)
    assert not state.should_send({"type": "audio.done", "response_id": "r1"}, 0.2, 16000)
    assert state.should_send({"type": "response.done", "response_id": "r1", "status": "cancelled"}, 0.3, 16000)
    assert state.should_send(audio("r2", 1.0), 0.4, 16000) and state.talking(0.5) == "r2"
    assert state.should_send({"type": "transcript.final", "text": "x"}, 0.5, 16000)
