"""Tool declarations, schema and argument checks, the registry, step budget, pending calls."""

from __future__ import annotations

import json
import socket
import time

import pytest

from services.tools.registry import (
    SERVER_OWNER,
    CallOutcome,
    PendingCalls,
    SchemaLimits,
    StepBudget,
    ToolArgumentsError,
    ToolRegistry,
    ToolRegistryError,
    ToolSchemaError,
    ToolSpec,
    ToolSpecError,
    client_spec,
    validate_arguments,
    validate_schema,
)

SID = "sess-1"
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "minLength": 1},
                                            "days": {"type": "integer", "minimum": 1}},
           "required": ["city"], "additionalProperties": False}


def spec(name="get_weather", parameters=None, *, timeout_s=5.0, owner=SID) -> ToolSpec:
    return ToolSpec(name, f"{name} tool", WEATHER if parameters is None else parameters,
                    timeout_s, owner)


def nested(levels: int) -> dict:
    """An object schema `levels` subschemas deep (the root is level 1)."""
    schema: dict = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def schema_error(parameters, **limits) -> str:
    with pytest.raises(ToolSchemaError) as caught:
        validate_schema(parameters, SchemaLimits(**limits))
    assert caught.value.code == "tool_error"
    return str(caught.value)


# ---- schemas that are accepted ----------------------------------------------------------

VALID = [
    {"type": "object"},
    WEATHER,
    {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
    {"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"op": {"enum": ["eq", "ne", None]}}}}}},
    {"type": "object", "$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "number"}, "y": {"type": "number"}}}},
     "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}}},
    # A linked list: the loop goes through a child value, so the instance bounds it.
    {"type": "object", "properties": {"value": {"type": "integer"}, "next": {"$ref": "#"}}},
    {"type": "object", "properties": {"a": True, "b": False, "c": {"$ref": "#/properties/b"}}},
    {"type": "object", "patternProperties": {"^x-[a-z]+$": {"type": "string"}}},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^" + "a" * 255}}},
    {"type": "object", "properties": {"slug": {"type": "string", "pattern": "^[a-z0-9-]+$"}},
     "if": {"required": ["slug"]}, "then": {"minProperties": 1}, "else": {"not": {}}},
    {"type": "object", "properties": {"a~b/c": {"type": "string"}},
     "dependentSchemas": {"a~b/c": {"$ref": "#/properties/a~0b~1c"}}},
    nested(8),
    {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(64)}},
]  # fmt: skip


@pytest.mark.parametrize("parameters", VALID)
def test_valid_schemas_pass(parameters):
    validate_schema(parameters)


# ---- schemas that are refused, and why --------------------------------------------------

OBJ = {"type": "object"}
INVALID = [
    ([], "must be a JSON object"),
    ("object", "must be a JSON object"),
    (None, "must be a JSON object"),
    ({}, '"type": "object"'),
    ({"type": "array"}, '"type": "object"'),
    ({"type": ["object"]}, '"type": "object"'),
    ({**OBJ, "properties": {"a": {"type": "strin"}}}, "not a valid JSON Schema"),
    ({**OBJ, "minProperties": "2"}, "not a valid JSON Schema"),
    ({**OBJ, "required": "city"}, "not a valid JSON Schema"),
    ({**OBJ, "properties": {"a": {"pattern": "(("}}}, "not a valid JSON Schema"),
    ({**OBJ, "$schema": "http://json-schema.org/draft-07/schema#"}, "$schema may only be"),
    ({**OBJ, "description": "x" * 17000}, "the limit is 16384"),
    (nested(9), "deeper than 8 levels"),
    ({**OBJ, "properties": {f"p{i}": {} for i in range(65)}}, "more than 64 properties"),
    ({**OBJ, "properties": {f"p{i}": {} for i in range(40)},
      "patternProperties": {f"^q{i}$": {} for i in range(25)}}, "more than 64 properties"),
    ({**OBJ, "properties": {"a": {**OBJ, "properties": {f"p{i}": {} for i in range(64)}}}},
     "more than 64 properties"),
    ({**OBJ, "properties": {"a": {"pattern": "a" * 257}}}, "longer than 256"),
    ({**OBJ, "patternProperties": {"b" * 257: {}}}, "longer than 256"),
    ({**OBJ, "properties": {"a": {"pattern": "^(a+)+$"}}}, "catastrophic"),
    ({**OBJ, "properties": {"a": {"pattern": "^(\\w+\\s?)*$"}}}, "catastrophic"),
    ({**OBJ, "properties": {"a": {"pattern": "((ab)*c)+"}}}, "catastrophic"),
    ({**OBJ, "properties": {"a": {"pattern": "(x{2,})*"}}}, "catastrophic"),
    ({**OBJ, "patternProperties": {"^(a+)*$": {}}}, "catastrophic"),
    ({**OBJ, "$ref": "https://example.com/schema.json"}, "only local $refs"),
    ({**OBJ, "properties": {"a": {"$ref": "other.json#/x"}}}, "only local $refs"),
    ({**OBJ, "properties": {"a": {"$ref": "urn:uuid:1234"}}}, "only local $refs"),
    ({**OBJ, "properties": {"a": {"$ref": "#foo"}}}, "JSON pointer"),
    ({**OBJ, "$id": "https://example.com/s"}, "$id is not supported"),
    ({**OBJ, "$defs": {"a": {"$anchor": "foo"}}}, "$anchor is not supported"),
    ({**OBJ, "$dynamicRef": "#meta"}, "$dynamicRef is not supported"),
    ({**OBJ, "definitions": {"a": {}}}, "definitions is not supported"),
    ({**OBJ, "allOf": [{"$ref": "#"}]}, "$ref loop"),
    ({**OBJ, "$ref": "#"}, "$ref loop"),
    ({**OBJ, "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"not": {"$ref": "#/$defs/a"}}},
      "properties": {"x": {"$ref": "#/$defs/a"}}}, "$ref loop"),
    ({**OBJ, "if": {"$ref": "#"}}, "$ref loop"),
    ({**OBJ, "properties": {"a": {"$ref": "#/properties"}}}, "does not point to a subschema"),
    ({**OBJ, "properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not point to a subschema"),
    ({**OBJ, "x-hidden": {"pattern": "(a+)+"}, "properties": {"a": {"$ref": "#/x-hidden"}}},
     "does not point to a subschema"),
    ({**OBJ, "$defs": {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}]} for i in range(9)}
      | {"d9": {}}, "allOf": [{"$ref": "#/$defs/d0"}]}, "more than 16 subschemas"),
    ({**OBJ, "properties": {"a": {"const": float("nan")}}}, "plain JSON"),
    ({**OBJ, "properties": {"a": {"enum": {1, 2}}}}, "plain JSON"),
    ({**OBJ, "const": json.loads("[" * 40 + "]" * 40)}, "deeper than 32"),
]  # fmt: skip


@pytest.mark.parametrize(("parameters", "reason"), INVALID)
def test_invalid_and_hostile_schemas_are_refused(parameters, reason):
    assert reason in schema_error(parameters)


def test_limits_are_configurable():
    schema = {**OBJ, "properties": {f"p{i}": {} for i in range(5)}}
    assert "more than 4 properties" in schema_error(schema, max_properties=4)
    assert "deeper than 2 levels" in schema_error(nested(3), max_depth=2)
    assert "the limit is 20" in schema_error(schema, max_bytes=20)


def test_refusals_never_echo_a_huge_value():
    for hostile in ({**OBJ, "properties": {"a": {"pattern": "(a+)+" + "b" * 5000}}},
                    {**OBJ, "$ref": "https://example.com/" + "x" * 5000},
                    {**OBJ, "properties": {"a": {"type": "x" * 5000}}}):
        assert len(schema_error(hostile)) < 400


def test_schema_and_argument_checks_never_open_a_connection(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the checks tried to open a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for ref in ("https://example.com/s.json", "http://127.0.0.1:9/x", "//example.com/x"):
        schema_error({**OBJ, "properties": {"a": {"$ref": ref}}})
    linked = {**OBJ, "properties": {"next": {"$ref": "#"}}}
    validate_arguments(spec(parameters=linked), {"next": {"next": {}}})


# ---- arguments --------------------------------------------------------------------------

def arguments_error(arguments, parameters=None, **limits) -> str:
    with pytest.raises(ToolArgumentsError) as caught:
        validate_arguments(spec(parameters=parameters), arguments, SchemaLimits(**limits))
    assert caught.value.code == "tool_error"
    return str(caught.value)


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, {"city": "Oslo", "days": 3}])
def test_fitting_arguments_pass(arguments):
    validate_arguments(spec(), arguments)


BAD_ARGUMENTS = [
    (["Paris"], "must be a JSON object"),
    ("Paris", "must be a JSON object"),
    ({}, "$: 'city' is a required property"),
    ({"city": 7}, "$.city: 7 is not of type 'string'"),
    ({"city": ""}, "$.city:"),
    ({"city": "Oslo", "days": 0}, "$.days: 0 is less than the minimum of 1"),
    ({"city": "Oslo", "units": "metric"}, "Additional properties are not allowed"),
    ({"city": "Oslo", "days": float("nan")}, "plain JSON"),
    ({"city": "Oslo", "days": object()}, "plain JSON"),
    ({"city": "x" * 20000}, "the limit is 16384"),
    ({"city": json.loads("[" * 20 + "]" * 20)}, "deeper than 16 levels"),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "reason"), BAD_ARGUMENTS)
def test_bad_arguments_are_named(arguments, reason):
    message = arguments_error(arguments)
    assert reason in message
    assert message.startswith("arguments of get_weather")


def test_only_the_first_few_errors_are_listed_and_values_are_clipped():
    schema = {**OBJ, "properties": {f"p{i}": {"type": "integer"} for i in range(10)}}
    message = arguments_error({f"p{i}": "v" * 1000 for i in range(10)}, schema)
    assert message.count("is not of type") == 3
    assert len(message) < 600


UNIQUE = {**OBJ, "properties": {"a": {"type": "array", "uniqueItems": True}}}


@pytest.mark.parametrize(("items", "unique"), [
    ([1, 2, 3], True),
    ([1, 1.0], False),  # JSON equality: one number
    ([True, 1], True),  # a boolean is not a number
    ([0, False, None, ""], True),
    ([{"a": 1, "b": 2}, {"b": 2, "a": 1}], False),
    ([[1, [2]], [1, [2.0]]], False),
    ([{"a": [1]}, {"a": [True]}], True),
])  # fmt: skip
def test_unique_items_follows_json_equality(items, unique):
    if unique:
        validate_arguments(spec(parameters=UNIQUE), {"a": items})
    else:
        assert "non-unique" in arguments_error({"a": items}, UNIQUE)


def test_unique_items_is_linear():
    started = time.perf_counter()
    validate_arguments(spec(parameters=UNIQUE), {"a": [{"k": [i]} for i in range(1200)]})
    assert time.perf_counter() - started < 0.5  # jsonschema's pairwise check takes ~2 s


def test_a_schema_that_multiplies_work_is_cut_by_the_step_budget():
    fan = [{"$ref": "#/$defs/d0"}] * 30  # 30 × 30 × … applications, nine values deep
    defs = {f"d{i}": {**OBJ, "properties": {"a": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 30}}}
            for i in range(8)} | {"d8": OBJ}
    bomb = {**OBJ, "$defs": defs, "allOf": fan}
    validate_schema(bomb)  # small and finite: only its arguments make it costly
    deep: dict = {}
    for _ in range(8):
        deep = {"a": deep}
    started = time.perf_counter()
    assert "too costly" in arguments_error(deep, bomb)
    assert time.perf_counter() - started < 2


def test_a_big_enum_weighs_its_length():
    schema = {**OBJ, "properties": {"a": {"type": "array", "items": {"enum": list(range(3000))}}}}
    validate_schema(schema)
    assert "too costly" in arguments_error({"a": [2999] * 3000}, schema)
    validate_arguments(spec(parameters=schema), {"a": [2999] * 10})


def test_recursion_through_values_is_bounded_by_the_arguments():
    linked = {**OBJ, "properties": {"value": {"type": "integer"}, "next": {"$ref": "#"}}}
    value: dict = {"value": 1}
    for _ in range(14):
        value = {"value": 1, "next": value}
    validate_arguments(spec(parameters=linked), value)
    value["next"]["next"]["value"] = "one"
    assert "$.next.next.value" in arguments_error(value, linked)


# ---- specs and the registry -------------------------------------------------------------

@pytest.mark.parametrize(("fields", "reason"), [
    ({"name": "bad name"}, "tool name"),
    ({"name": ""}, "tool name"),
    ({"name": "n" * 65}, "tool name"),
    ({"name": 7}, "tool name"),
    ({"description": "d" * 1025}, "at most 1024 characters"),
    ({"description": None}, "description"),
    ({"timeout_s": 0}, "timeout"),
    ({"timeout_s": 30.001}, "timeout"),
    ({"owner": ""}, "owner"),
])  # fmt: skip
def test_bad_declarations_are_refused(fields, reason):
    values = {"name": "t", "description": "d", "parameters": OBJ, "timeout_s": 1.0, "owner": SID}
    with pytest.raises(ToolSpecError, match=reason) as caught:
        ToolSpec(**values | fields)
    assert caught.value.code == "tool_error"


def test_client_spec_converts_the_timeout():
    assert client_spec("t", "d", OBJ, owner=SID).timeout_s == 10.0
    assert client_spec("t", "d", OBJ, owner=SID, timeout_ms=30000).timeout_s == 30.0
    with pytest.raises(ToolSpecError):
        client_spec("t", "d", OBJ, owner=SID, timeout_ms=30001)


def server_tool(name: str) -> ToolSpec:
    return spec(name, owner=SERVER_OWNER)


def test_for_model_lists_server_tools_then_session_tools_in_openai_shape():
    registry = ToolRegistry(SID, [server_tool("lookup_order")])
    registry.register(spec("get_weather"))
    registry.register(spec("set_timer", OBJ))
    assert [t["function"]["name"] for t in registry.for_model()] == [
        "lookup_order", "get_weather", "set_timer"]
    assert registry.for_model()[1] == {"type": "function", "function": {
        "name": "get_weather", "description": "get_weather tool", "parameters": WEATHER}}
    assert len(registry) == 3


def test_registering_a_name_again_replaces_the_tool_in_place():
    registry = ToolRegistry(SID)
    registry.register(spec("a"))
    registry.register(spec("b"))
    registry.register(ToolSpec("a", "new", OBJ, 2.0, SID))
    assert registry.get("a").description == "new"
    assert [t["function"]["name"] for t in registry.for_model()] == ["a", "b"]


def test_a_session_holds_at_most_64_tools_of_its_own():
    registry = ToolRegistry(SID, [server_tool(f"s{i}") for i in range(3)])
    for i in range(64):
        registry.register(spec(f"t{i}", OBJ))
    with pytest.raises(ToolRegistryError, match="at most 64"):
        registry.register(spec("one_more", OBJ))
    registry.register(spec("t5", WEATHER))  # a replacement needs no free place
    assert registry.unregister("t0")
    registry.register(spec("one_more", OBJ))
    assert len(registry) == 67


def test_a_client_tool_may_not_take_a_server_tools_name():
    registry = ToolRegistry(SID, [server_tool("lookup_order")])
    with pytest.raises(ToolRegistryError, match="server tool") as caught:
        registry.register(spec("lookup_order"))
    assert caught.value.code == "tool_error"
    assert registry.get("lookup_order").owner == SERVER_OWNER
    assert not registry.unregister("lookup_order")
    assert registry.get("lookup_order") is not None


def test_register_checks_the_schema_and_keeps_nothing_on_failure():
    registry = ToolRegistry(SID)
    with pytest.raises(ToolSchemaError):
        registry.register(spec("evil", {**OBJ, "$ref": "https://example.com/x"}))
    assert registry.get("evil") is None and len(registry) == 0


def test_unregister_and_ownership():
    registry = ToolRegistry(SID)
    registry.register(spec("a"))
    assert registry.unregister("a") and not registry.unregister("a")
    assert registry.get("a") is None
    with pytest.raises(ValueError):
        registry.register(spec("b", owner="someone-else"))
    with pytest.raises(ValueError):
        ToolRegistry(SID, [spec("c", owner=SID)])


# ---- step budget ------------------------------------------------------------------------

@pytest.mark.parametrize(("max_steps", "takes", "granted", "remaining"), [
    (8, 3, [True] * 3, 5),
    (8, 10, [True] * 8 + [False] * 2, 0),
    (1, 2, [True, False], 0),
])  # fmt: skip
def test_step_budget(max_steps, takes, granted, remaining):
    budget = StepBudget(max_steps)
    assert [budget.take() for _ in range(takes)] == granted
    assert budget.remaining == remaining
    assert budget.exhausted == (remaining == 0)
    budget.reset()
    assert budget.remaining == max_steps and not budget.exhausted


def test_step_budget_defaults_to_8_and_needs_one_step():
    assert StepBudget().max_steps == 8
    with pytest.raises(ValueError):
        StepBudget(0)


# ---- pending calls ----------------------------------------------------------------------

CLIENT = spec("get_weather", timeout_s=5.0)
SERVER = server_tool("lookup_order")


def test_a_result_resolves_its_call_once():
    calls = PendingCalls()
    calls.start("c1", CLIENT, {"city": "Oslo"}, now=0)
    outcome = calls.resolve("c1", {"temp_c": 3}, now=1)
    assert outcome == CallOutcome("c1", "get_weather", output={"temp_c": 3})
    assert outcome.for_model() == {"role": "tool", "tool_call_id": "c1",
                                   "content": '{"temp_c": 3}'}
    assert calls.resolve("c1", {"temp_c": 4}, now=1) is None
    assert calls.resolve("unknown", 1, now=1) is None
    assert len(calls) == 0


def test_an_error_result_is_a_tool_error():
    calls = PendingCalls()
    calls.start("c1", CLIENT, {}, now=0)
    outcome = calls.resolve("c1", None, now=1, error="no such city")
    assert (outcome.ok, outcome.error_code, outcome.error) == (False, "tool_error", "no such city")
    assert json.loads(outcome.for_model()["content"]) == {
        "error": {"code": "tool_error", "message": "no such city"}}


def test_only_the_owner_may_answer_when_asked():
    calls = PendingCalls()
    calls.start("w1", SERVER, {}, now=0)
    assert calls.resolve("w1", {"ok": True}, now=1, owner=SID) is None
    assert calls.resolve("w1", {"ok": True}, now=1, owner=SERVER_OWNER).ok


def test_calls_expire_at_their_own_timeout():
    calls = PendingCalls()
    calls.start("c1", CLIENT, {}, now=0)  # 5 s
    calls.start("c2", spec("slow", timeout_s=20.0), {}, now=1)
    assert calls.next_deadline() == 5
    assert calls.expired(now=5) == []  # the deadline itself is still in time
    assert calls.resolve("c1", 1, now=5.5) is None  # too late: it will expire as a timeout
    [late] = calls.expired(now=5.5)
    assert (late.call_id, late.error_code) == ("c1", "tool_timeout")
    assert "within 5 s" in late.error
    assert calls.next_deadline() == 21 and "c2" in calls and "c1" not in calls
    assert [o.call_id for o in calls.expired(now=100)] == ["c2"]
    assert calls.next_deadline() is None


def test_a_call_id_is_started_once():
    calls = PendingCalls()
    calls.start("c1", CLIENT, {}, now=0)
    with pytest.raises(ValueError):
        calls.start("c1", CLIENT, {}, now=1)


def test_a_disconnected_client_gets_its_calls_again_on_resume():
    calls = PendingCalls()
    calls.start("c1", CLIENT, {"city": "Oslo"}, now=0)
    calls.start("w1", SERVER, {}, now=0)
    calls.suspend(now=2, window_s=120)
    assert [o.call_id for o in calls.expired(now=10)] == ["w1"]  # webhooks time out as usual
    calls.start("c2", spec("set_timer"), {"s": 60}, now=30)  # asked while the client is away
    assert calls.expired(now=100) == []
    again = calls.unanswered(now=100)
    assert [(c.call_id, c.arguments) for c in again] == [
        ("c1", {"city": "Oslo"}), ("c2", {"s": 60})]
    assert all(c.deadline == 105 and not c.waiting_for_resume for c in again)
    assert calls.resolve("c1", "sunny", now=101).output == "sunny"
    [late] = calls.expired(now=106)
    assert (late.call_id, late.error_code) == ("c2", "tool_timeout")


def test_the_model_gets_an_error_when_the_resume_window_ends():
    calls = PendingCalls()
    calls.start("c1", CLIENT, {}, now=0)
    calls.suspend(now=2, window_s=120)
    assert calls.next_deadline() == 122
    assert calls.expired(now=122) == []
    [late] = calls.expired(now=122.5)
    assert late.error_code == "tool_error" and "disconnected" in late.error


def test_abandon_all_answers_everything_with_the_reason():
    calls = PendingCalls()
    calls.start("c1", CLIENT, {}, now=0)
    calls.start("w1", SERVER, {}, now=0)
    calls.suspend(now=1, window_s=120)
    outcomes = calls.abandon_all("the turn was cancelled")
    assert [(o.call_id, o.error_code, o.error) for o in outcomes] == [
        ("c1", "tool_error", "the turn was cancelled"),
        ("w1", "tool_error", "the turn was cancelled")]
    assert len(calls) == 0 and calls.next_deadline() is None
    calls.start("c3", CLIENT, {}, now=200)  # no longer suspended: an ordinary deadline
    assert calls.next_deadline() == 205
