"""JSON Schemas of tools: hostile input that the worker runs, made safe to run (pure).

`validate_schema` accepts a tool's `parameters` only when checking arguments against it can
neither fetch anything nor run away:
- a JSON object with `"type": "object"`, valid against Draft 2020-12, at most
  `SchemaLimits.max_bytes` serialized, `max_depth` subschema levels, and `max_properties`
  names under all `properties` and `patternProperties` together;
- `$ref` only as a JSON pointer into the same document ("#/$defs/x") that lands on a
  subschema; `$id`, `$anchor`, the dynamic and recursive refs and `definitions` are refused;
  `$schema`, when present, must name 2020-12;
- no `$ref` loop that never moves to a child value (`{"allOf": [{"$ref": "#"}]}`), and no
  run of more than `max_chain` subschemas applied to one value;
- regular expressions of at most `max_pattern_chars`, without a repeated group that holds an
  unbounded repeat (`(a+)+`: the catastrophic-backtracking shape).
`check_arguments` bounds the other side: arguments are small, shallow JSON, and one check
evaluates at most `max_validation_steps` keywords (`enum` weighs its length, `uniqueItems`
the array's, and is checked in linear time). `format` is an annotation, never asserted.
"""

from __future__ import annotations

import json
import re
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError

from shared.errors import ParleyError

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_MAX_NESTING = 32  # raw JSON nesting anywhere (const, enum, unknown keywords)
_SHOWN_ERRORS = 3


@dataclass(frozen=True, slots=True)
class SchemaLimits:
    max_bytes: int = 16 * 1024
    max_depth: int = 8
    max_properties: int = 64
    max_pattern_chars: int = 256
    max_chain: int = 16
    max_argument_bytes: int = 16 * 1024
    max_argument_depth: int = 16
    max_validation_steps: int = 50_000

    def __post_init__(self) -> None:
        if min(getattr(self, name) for name in self.__slots__) <= 0:
            raise ValueError("schema limits must be positive")


DEFAULT_LIMITS = SchemaLimits()


class ToolSchemaError(ParleyError, code="tool_error"):
    """`parameters` is not a JSON Schema the worker accepts to run."""


class ToolArgumentsError(ParleyError, code="tool_error"):
    """The arguments do not fit the tool's schema (or are too big to check)."""


# ---------------------------------------------------------------- the schema

_IN_PLACE_ONE = ("not", "if", "then", "else")  # applied to the value their parent checks
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_CHILD_ONE = ("items", "contains", "additionalProperties", "propertyNames",
              "unevaluatedItems", "unevaluatedProperties")  # applied to a child value
_CHILD_LIST = ("prefixItems",)
_CHILD_MAP = ("properties", "patternProperties", "$defs")
_REFUSED = ("$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef",
            "$recursiveAnchor", "definitions")


def validate_schema(parameters: Any, limits: SchemaLimits = DEFAULT_LIMITS) -> None:
    """Raise ToolSchemaError unless `parameters` is a schema the worker may run."""
    if not isinstance(parameters, dict):
        raise ToolSchemaError("parameters must be a JSON object (a JSON Schema)")
    _check_json(parameters, _MAX_NESTING, limits.max_bytes, ToolSchemaError, "parameters")
    if parameters.get("type") != "object":
        raise ToolSchemaError('parameters must declare "type": "object"')
    if parameters.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        raise ToolSchemaError(f"$schema may only be {DRAFT_2020_12}")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        raise ToolSchemaError(f"not a valid JSON Schema (Draft 2020-12) at "
                              f"{_clip(exc.json_path, 80)}: {_clip(exc.message, 120)}") from None
    # Only now are the known keywords known to hold the right JSON types.
    _check_chains(_walk(parameters, limits), limits.max_chain)


def _walk(root: dict[str, Any], limits: SchemaLimits) -> dict[str, list[str]]:
    """Check every subschema; return, by JSON pointer, what each applies to the same value."""
    in_place: dict[str, list[str]] = {}
    stack: list[tuple[str, Any, int]] = [("", root, 1)]
    properties = 0
    while stack:
        pointer, schema, level = stack.pop()
        if not isinstance(schema, dict):
            in_place[pointer] = []  # the boolean schemas true and false
            continue
        if level > limits.max_depth:
            raise ToolSchemaError(f"schema nested deeper than {limits.max_depth} levels "
                                  f"at {_at(pointer)}")
        _check_keywords(pointer, schema, limits)
        properties += len(schema.get("properties", ())) + len(schema.get("patternProperties", ()))
        if properties > limits.max_properties:
            raise ToolSchemaError(f"more than {limits.max_properties} properties")
        children = list(_children(pointer, schema))
        in_place[pointer] = [child for child, _, same_value in children if same_value]
        if "$ref" in schema:
            in_place[pointer].append(unquote(schema["$ref"][1:]))
        stack.extend((child, node, level + 1) for child, node, _ in children)
    return in_place


def _children(pointer: str, schema: dict[str, Any]):
    """(pointer, subschema, applies to the same value?) for each direct subschema."""
    for keyword, value in schema.items():
        where = f"{pointer}/{_escape(keyword)}"
        if keyword in _IN_PLACE_ONE or keyword in _CHILD_ONE:
            yield where, value, keyword in _IN_PLACE_ONE
        elif keyword in _IN_PLACE_LIST or keyword in _CHILD_LIST:
            for i, item in enumerate(value):
                yield f"{where}/{i}", item, keyword in _IN_PLACE_LIST
        elif keyword in _IN_PLACE_MAP or keyword in _CHILD_MAP:
            for name, item in value.items():
                yield f"{where}/{_escape(name)}", item, keyword in _IN_PLACE_MAP


def _check_keywords(pointer: str, schema: dict[str, Any], limits: SchemaLimits) -> None:
    for keyword in _REFUSED:
        if keyword in schema:
            raise ToolSchemaError(f"{keyword} is not supported (at {_at(pointer)})")
    ref = schema.get("$ref")
    if ref is not None and not ref.startswith("#"):
        raise ToolSchemaError(f"only local $refs (starting with '#') are allowed, not {_show(ref)}")
    if ref is not None and ref != "#" and not ref.startswith("#/"):
        raise ToolSchemaError(f"$ref must be a JSON pointer such as '#/$defs/x', not {_show(ref)}")
    patterns = list(schema.get("patternProperties", ()))
    if "pattern" in schema:
        patterns.append(schema["pattern"])
    for pattern in patterns:
        if len(pattern) > limits.max_pattern_chars:
            raise ToolSchemaError(f"pattern longer than {limits.max_pattern_chars} characters "
                                  f"at {_at(pointer)}")
        if _nested_repeat(pattern):
            raise ToolSchemaError(f"pattern {_show(pattern)} at {_at(pointer)} repeats a group "
                                  "that holds an unbounded repeat (catastrophic backtracking)")


_UNBOUNDED = re.compile(r"[*+]|\{\d*,\}")


def _nested_repeat(pattern: str) -> bool:
    """True when a group holding `*`, `+` or `{n,}` is itself repeated without bound."""
    holds = [False]  # per open group: does it hold an unbounded repeat?
    closed_holding = False  # the token just read closed such a group
    i = 0
    while i < len(pattern):
        char, after_group, closed_holding = pattern[i], closed_holding, False
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(pattern, i)
            continue
        if char == "(":
            holds.append(False)
        elif char == ")" and len(holds) > 1:
            closed_holding = holds.pop()
            holds[-1] = holds[-1] or closed_holding
        elif _UNBOUNDED.match(pattern, i):
            if after_group:
                return True
            holds[-1] = True
        i += 1
    return False


def _class_end(pattern: str, start: int) -> int:
    """Index after the character class that opens at `start` (a leading ']' is literal)."""
    i = start + 1
    i += pattern.startswith("^", i)
    i += pattern.startswith("]", i)
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _check_chains(in_place: dict[str, list[str]], max_chain: int) -> None:
    """Every $ref lands on a subschema; runs on one value are finite and short."""
    for targets in in_place.values():
        for target in targets:
            if target not in in_place:
                raise ToolSchemaError(f"$ref {_show('#' + target)} does not point to a subschema")
    longest: dict[str, int] = {}
    for pointer in in_place:
        _longest_run(pointer, in_place, longest, [], max_chain)


def _longest_run(pointer: str, in_place: dict[str, list[str]], longest: dict[str, int],
                 path: list[str], max_chain: int) -> int:
    """Memoised depth-first search; `path` never exceeds max_chain, so recursion stays shallow."""
    if pointer in longest:
        return longest[pointer]
    if pointer in path:
        raise ToolSchemaError(f"$ref loop at {_at(pointer)}: it applies itself to the same "
                              "value forever")
    if len(path) >= max_chain:
        raise ToolSchemaError(f"more than {max_chain} subschemas apply to one value "
                              f"(via {_at(pointer)})")
    path.append(pointer)
    longest[pointer] = 1 + max((_longest_run(target, in_place, longest, path, max_chain)
                                for target in in_place[pointer]), default=0)
    path.pop()
    return longest[pointer]


# ---------------------------------------------------------------- the arguments

class _TooCostly(Exception):
    pass


_steps_left: ContextVar[list[int]] = ContextVar("tool_validation_steps")


def _spend(steps: int) -> None:
    left = _steps_left.get()
    left[0] -= steps
    if left[0] < 0:
        raise _TooCostly


def _metered(name: str, keyword):
    """The keyword's check, after spending steps from the running check's budget."""
    def check(validator, value, instance, schema):
        _spend(len(value) if name == "enum" else 1)
        return keyword(validator, value, instance, schema)
    return check


def _unique_items(validator, unique, instance, schema):
    """uniqueItems in linear time: jsonschema compares unhashable items pairwise."""
    if not unique or not validator.is_type(instance, "array"):
        return
    _spend(len(instance))
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            repeated = _clip(json.dumps(item), 40)
            yield ValidationError(f"has non-unique elements ({repeated} repeats)")
            return
        seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable form with JSON equality: 1 == 1.0 but true != 1; key order ignored."""
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    return ("bool" if isinstance(value, bool) else "scalar", value)


_ArgumentValidator = validators.extend(Draft202012Validator, {
    name: _metered(name, keyword)
    for name, keyword in {**Draft202012Validator.VALIDATORS, "uniqueItems": _unique_items}.items()
})


def check_arguments(schema: dict[str, Any], arguments: Any, *, tool: str,
                    limits: SchemaLimits = DEFAULT_LIMITS) -> None:
    """Raise ToolArgumentsError naming the first few mismatches (path: message, clipped).

    `schema` must have passed `validate_schema`."""
    what = f"arguments of {tool}"
    if not isinstance(arguments, dict):
        raise ToolArgumentsError(f"{what} must be a JSON object")
    _check_json(arguments, limits.max_argument_depth, limits.max_argument_bytes,
                ToolArgumentsError, what)
    budget = _steps_left.set([limits.max_validation_steps])
    try:
        found = _ArgumentValidator(schema).iter_errors(arguments)
        errors = list(islice(found, _SHOWN_ERRORS))
    except (_TooCostly, RecursionError):
        raise ToolArgumentsError(f"{what} are too costly to check against its schema") from None
    finally:
        _steps_left.reset(budget)
    if errors:
        shown = "; ".join(_describe(error) for error in errors)
        raise ToolArgumentsError(f"{what} do not match its schema: {shown}")


def _describe(error: ValidationError) -> str:
    """`path: message` with the offending value clipped, keeping what is wrong with it."""
    message, value = error.message, repr(error.instance)
    if message.startswith(value):  # jsonschema's messages mostly open with the value
        message = _clip(value, 40) + message[len(value):]
    return f"{_clip(error.json_path, 60)}: {_clip(message, 160)}"


# ---------------------------------------------------------------- helpers

def _check_json(value: Any, max_depth: int, max_bytes: int, error: type[ParleyError],
                what: str) -> None:
    """Shallow enough (walked without recursion), plain JSON, and small enough."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise error(f"{what} nest deeper than {max_depth} levels")
        if isinstance(node, (dict, list)):
            stack.extend((child, depth + 1) for child in
                         (node.values() if isinstance(node, dict) else node))
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        raise error(f"{what} must be plain JSON (objects with string keys, arrays, strings, "
                    "finite numbers, booleans, null)") from None
    if size > max_bytes:
        raise error(f"{what} take {size} bytes; the limit is {max_bytes}")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _at(pointer: str) -> str:
    return _clip("#" + pointer, 80)


def _show(value: Any) -> str:
    return _clip(repr(value), 40)


def _clip(text: str, limit: int) -> str:
    """Client input inside a message, clipped: never echo a huge value back."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
