"""One assistant turn, driven by tables of inputs: no event loop, no clock."""

from __future__ import annotations

import json

import pytest

from services.tools.llm.provider import TextDelta, ToolCallRequest, TurnEnd
from services.tools.registry import SERVER_OWNER, StepBudget, ToolRegistry, ToolSpec
from services.tools.turn import (
    AppendHistory,
    CallClientTool,
    CallServerTool,
    ContinueLlm,
    Finish,
    Say,
    Turn,
)

SID = "sess-1"
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "minLength": 1}},
           "required": ["city"], "additionalProperties": False}
HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]


def make_turn(max_steps: int = 8) -> Turn:
    registry = ToolRegistry(SID, [ToolSpec("lookup", "server tool", WEATHER, 2.0, SERVER_OWNER)])
    registry.register(ToolSpec("get_weather", "client tool", WEATHER, 5.0, SID))
    return Turn("resp-1", registry, StepBudget(max_steps), list(HISTORY), "Weather?", now=0.0)


def text(s: str):
    return ("llm", TextDelta(s))


def call(call_id: str, name: str = "get_weather", args: str = '{"city": "Oslo"}'):
    return ("llm", ToolCallRequest(call_id, name, args))


END = ("llm", TurnEnd("stop"))
CALLS_END = ("llm", TurnEnd("tool_calls"))


def result(call_id: str, output=None, error=None, at: float = 1.0):
    return ("result", call_id, output, error, at)


def drive(turn: Turn, script: list) -> list:
    actions = []
    for step in script:
        match step:
            case ("llm", event):
                actions += turn.on_llm_event(event, 0.5)
            case ("result", call_id, output, error, at):
                actions += turn.on_tool_result(call_id, output, error, at)
            case ("tick", at):
                actions += turn.on_tick(at)
            case ("cancel",):
                actions += turn.cancel(0.7)
    return actions


def brief(action) -> str:
    """A compact spelling of an action for the tables."""
    match action:
        case Say(index=i, text=t):
            return f"say {i} {t}"
        case CallClientTool(call_id=c, name=n, owner=o, timeout_s=s):
            return f"client {c} {n} {o} {s:g}"
        case CallServerTool(call_id=c, name=n):
            return f"server {c} {n}"
        case ContinueLlm(messages=m):
            return f"continue {len(m)}"
        case AppendHistory(messages=m):
            return "append " + ",".join(x["role"] for x in m)
        case Finish(reason=r):
            return f"finish {r}"
    raise AssertionError(action)


CASES = {
    "plain text in sentences": (
        [text("It is sunny. It is"), text(" warm today! And"), text(" windy"), END],
        ["say 0 It is sunny.", "say 1 It is warm today!", "say 2 And windy",
         "append assistant", "finish stop"]),
    "one client call, result, continue": (
        [text("Let me check. "), call("c1"), CALLS_END, result("c1", {"t": 20}),
         text("It is 20 degrees."), END],
        ["say 0 Let me check.", "client c1 get_weather sess-1 5",
         "append assistant,tool", "continue 5", "say 1 It is 20 degrees.",
         "append assistant", "finish stop"]),
    "server tool": (
        [call("s1", "lookup"), CALLS_END, result("s1", "ok"), END],
        ["server s1 lookup", "append assistant,tool", "continue 5",
         "append assistant", "finish stop"]),
    "invalid arguments: error result, no call": (
        [call("c1", args='{"town": "Oslo"}'), CALLS_END, END],
        ["append assistant,tool", "continue 5", "append assistant", "finish stop"]),
    "arguments not a JSON object": (
        [call("c1", args="[1, 2"), CALLS_END],
        ["append assistant,tool", "continue 5"]),
    "unknown tool": (
        [call("c1", "launch_rocket"), CALLS_END],
        ["append assistant,tool", "continue 5"]),
    "two calls, results out of order": (
        [call("c1"), call("c2", args='{"city": "Rome"}'), CALLS_END,
         result("c2", 2), result("c1", 1)],
        ["client c1 get_weather sess-1 5", "client c2 get_weather sess-1 5",
         "append assistant,tool,tool", "continue 6"]),
    "one valid and one invalid call": (
        [call("c1"), call("c2", "nope"), CALLS_END, result("c1", 1)],
        ["client c1 get_weather sess-1 5", "append assistant,tool,tool", "continue 6"]),
    "timeout of a call": (
        [call("c1"), CALLS_END, ("tick", 5.0), ("tick", 5.6), result("c1", 1, at=5.7)],
        ["client c1 get_weather sess-1 5", "append assistant,tool", "continue 5"]),
    "result for an unknown call is ignored": (
        [call("c1"), CALLS_END, result("zz", 1), result("c1", 1), result("c1", 2)],
        ["client c1 get_weather sess-1 5", "append assistant,tool", "continue 5"]),
    "repeated call id from the model is dropped": (
        [call("c1"), call("c1"), CALLS_END, result("c1", 1)],
        ["client c1 get_weather sess-1 5", "append assistant,tool", "continue 5"]),
    "cancel mid-stream keeps only what was said": (
        [text("First one. Second"), ("cancel",), text(" part."), END, ("cancel",)],
        ["say 0 First one.", "append assistant", "finish cancelled"]),
    "cancel before any sentence persists nothing": (
        [text("Hmm"), ("cancel",)],
        ["finish cancelled"]),
    "cancel mid-tool-call, late result ignored": (
        [call("c1"), CALLS_END, ("cancel",), result("c1", 1), ("tick", 99.0)],
        ["client c1 get_weather sess-1 5", "finish cancelled"]),
}


@pytest.mark.parametrize("script,expected", CASES.values(), ids=CASES.keys())
def test_turn_table(script, expected):
    turn = make_turn()
    assert [brief(a) for a in drive(turn, script)] == expected


STEP_LIMIT_CASES = {
    "one step allowed: finish after its results": (
        1, [call("c1"), CALLS_END, result("c1", 1), text("late"), END],
        ["client c1 get_weather sess-1 5", "append assistant,tool", "finish step_limit"]),
    "two steps allowed": (
        2, [call("c1"), CALLS_END, result("c1", 1), call("c2"), CALLS_END, result("c2", 2)],
        ["client c1 get_weather sess-1 5", "append assistant,tool", "continue 5",
         "client c2 get_weather sess-1 5", "append assistant,tool", "finish step_limit"]),
}


@pytest.mark.parametrize("max_steps,script,expected", STEP_LIMIT_CASES.values(),
                         ids=STEP_LIMIT_CASES.keys())
def test_step_limit(max_steps, script, expected):
    turn = make_turn(max_steps)
    assert [brief(a) for a in drive(turn, script)] == expected
    assert turn.done


def test_start_persists_the_user_and_asks_the_model():
    turn = make_turn()
    append, cont = turn.start()
    assert append == AppendHistory([{"role": "user", "content": "Weather?"}])
    assert cont == ContinueLlm([*HISTORY, {"role": "user", "content": "Weather?"}])


def test_history_pairs_calls_with_results_in_call_order():
    turn = make_turn()
    actions = drive(turn, [text("Checking. "), call("c1"), call("c2", "nope"),
                           call("c3", args='{"city": "Rome"}'), CALLS_END,
                           result("c3", {"t": 3}), result("c1", None, error="offline")])
    [append] = [a for a in actions if isinstance(a, AppendHistory)]
    assistant, *tools = append.messages
    assert assistant["content"] == "Checking. "
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2", "c3"]
    assert [t["tool_call_id"] for t in tools] == ["c1", "c2", "c3"]
    contents = [json.loads(t["content"]) for t in tools]
    assert contents[0]["error"]["code"] == "tool_error" and "offline" in contents[0]["error"]["message"]
    assert "nope" in contents[1]["error"]["message"]
    assert contents[2] == {"t": 3}
    [cont] = [a for a in actions if isinstance(a, ContinueLlm)]
    assert cont.messages[-4:] == append.messages
    assert cont.messages[:3] == [*HISTORY, {"role": "user", "content": "Weather?"}]


def test_invalid_arguments_reach_the_model_as_an_error():
    turn = make_turn()
    actions = drive(turn, [call("c1", args='{"city": ""}'), CALLS_END])
    assert not any(isinstance(a, (CallClientTool, CallServerTool)) for a in actions)
    tool = actions[0].messages[1]
    assert json.loads(tool["content"])["error"]["code"] == "tool_error"


def test_timeout_is_a_tool_timeout_for_the_model_and_deadline_is_exposed():
    turn = make_turn()
    drive(turn, [call("c1"), CALLS_END])
    assert turn.next_deadline() == 5.5  # started at 0.5, 5 s timeout
    actions = turn.on_tick(5.6)
    tool = actions[0].messages[1]
    assert json.loads(tool["content"])["error"]["code"] == "tool_timeout"
    assert turn.next_deadline() is None


def test_output_that_is_not_json_becomes_an_error():
    turn = make_turn()
    actions = drive(turn, [call("c1"), CALLS_END, result("c1", float("nan"))])
    tool = actions[1].messages[1]
    assert json.loads(tool["content"])["error"]["code"] == "tool_error"


def test_llm_error_finishes_once():
    turn = make_turn()
    drive(turn, [text("Sure. ")])
    assert [brief(a) for a in turn.on_llm_error(1.0)] == ["append assistant", "finish error"]
    assert turn.on_llm_error(1.0) == [] and turn.cancel(1.0) == []


def test_sentence_indexes_continue_across_steps():
    turn = make_turn()
    actions = drive(turn, [text("One. "), call("c1"), CALLS_END, result("c1", 1),
                           text("Two. Three."), END])
    assert [(a.index, a.text) for a in actions if isinstance(a, Say)] == [
        (0, "One."), (1, "Two."), (2, "Three.")]
    assert all(a.response_id == "resp-1" for a in actions if isinstance(a, (Say, Finish)))


def test_a_call_waits_through_a_disconnection_and_is_sent_again_on_resume():
    turn = make_turn()
    turn.start()
    turn.on_llm_event(ToolCallRequest("c1", "get_weather", '{"city": "Oslo"}'), 0.0)
    [sent] = turn.on_llm_event(TurnEnd("tool_calls"), 0.0)
    assert isinstance(sent, CallClientTool) and turn.is_waiting_for("c1")
    assert turn.on_client_gone(1.0, window_s=60.0) == []
    assert turn.on_tick(10.0) == []  # past its own 5 s timeout: the window counts now
    [again] = turn.on_client_back(20.0)
    assert again == CallClientTool("c1", "get_weather", {"city": "Oslo"}, SID, 5.0)
    assert turn.next_deadline() == 25.0  # a fresh timeout from the resume
    actions = turn.on_tool_result("c1", {"temp": 3}, None, 21.0)
    assert isinstance(actions[-1], ContinueLlm) and not turn.is_waiting_for("c1")


def test_a_client_that_never_comes_back_gives_the_model_an_error():
    turn = make_turn()
    turn.start()
    turn.on_llm_event(ToolCallRequest("c1", "get_weather", '{"city": "Oslo"}'), 0.0)
    turn.on_llm_event(TurnEnd("tool_calls"), 0.0)
    turn.on_client_gone(1.0, window_s=60.0)
    history, _ = turn.on_tick(61.5)
    assert "did not come back in time" in history.messages[-1]["content"]


def test_presence_after_the_turn_is_over_changes_nothing():
    turn = make_turn()
    turn.start()
    turn.cancel(0.0)
    assert turn.on_client_gone(1.0, 60.0) == [] and turn.on_client_back(2.0) == []
    assert not turn.is_waiting_for("c1")
