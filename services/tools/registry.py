"""The tools of one assistant session, and the bookkeeping of their calls (pure).

- `ToolSpec`: one declared function; `owner` is the session that registered it, or
  `"server"` for a webhook tool from the configuration.
- `ToolRegistry`: a session's tools next to the server's. At most 64 of the session's own;
  registering a name again replaces that tool. A client tool may not take a server tool's
  name: it is refused, not shadowed, so the operator's tool is always the one the model sees
  and a client cannot intercept calls meant for it.
- `StepBudget`: how many model rounds with tool calls one turn may take (8 by default).
- `PendingCalls`: the calls a turn waits for, their deadlines, and what happens when the
  client goes away: its calls are kept, re-sent on resume (`unanswered`), or answered with
  an error when the resume window ends.
Schema and argument checks live in `services.tools.schema`; they are re-exported here.
Time is passed in as `now` (seconds, monotonic), so all of it is tested without a clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from services.tools.schema import (
    DEFAULT_LIMITS,
    SchemaLimits,
    ToolArgumentsError,
    ToolSchemaError,
    check_arguments,
    validate_schema,
)
from shared.errors import ParleyError

__all__ = [
    "DEFAULT_LIMITS",
    "SERVER_OWNER",
    "CallOutcome",
    "PendingCall",
    "PendingCalls",
    "SchemaLimits",
    "StepBudget",
    "ToolArgumentsError",
    "ToolRegistry",
    "ToolRegistryError",
    "ToolSchemaError",
    "ToolSpec",
    "ToolSpecError",
    "client_spec",
    "session_registry",
    "validate_arguments",
    "validate_schema",
]

SERVER_OWNER = "server"
MAX_TOOLS_PER_SESSION = 64
MAX_TIMEOUT_S = 30.0
DEFAULT_TIMEOUT_S = 10.0
MAX_DESCRIPTION_CHARS = 1024
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ToolSpecError(ParleyError, code="tool_error"):
    """A declaration that cannot be accepted: name, description, timeout or owner."""


class ToolRegistryError(ParleyError, code="tool_error"):
    """The session has too many tools, or the name belongs to a server tool."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(hash=False)  # a JSON Schema; read-only once made
    timeout_s: float
    owner: str  # the id of the session that registered it, or SERVER_OWNER

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ToolSpecError("tool name must match ^[A-Za-z0-9_-]{1,64}$, not "
                                f"{repr(self.name)[:40]}")
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION_CHARS:
            raise ToolSpecError(f"description of {self.name} must be a string of at most "
                                f"{MAX_DESCRIPTION_CHARS} characters")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ToolSpecError(f"timeout of {self.name} must be above 0 and at most "
                                f"{MAX_TIMEOUT_S:g} s")
        if not self.owner:
            raise ToolSpecError(f"tool {self.name} needs an owner")

    @property
    def is_server(self) -> bool:
        return self.owner == SERVER_OWNER

    def for_model(self) -> dict[str, Any]:
        """This tool as one entry of an OpenAI chat-completions `tools` list."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


def client_spec(name: str, description: str, parameters: dict[str, Any], *, owner: str,
                timeout_ms: int | None = None) -> ToolSpec:
    """The spec of a client's `tool.register` (no `timeout_ms`: 10 s). Not yet schema-checked:
    `ToolRegistry.register` does that."""
    timeout_s = DEFAULT_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000
    return ToolSpec(name, description, parameters, timeout_s, owner)


def validate_arguments(spec: ToolSpec, arguments: Any,
                       limits: SchemaLimits = DEFAULT_LIMITS) -> None:
    """Raise ToolArgumentsError when `arguments` do not fit `spec`'s schema (first few
    mismatches, clipped)."""
    check_arguments(spec.parameters, arguments, tool=spec.name, limits=limits)


class ToolRegistry:
    """One session's tools, merged with the server's for the model."""

    def __init__(self, session_id: str, server_tools: Iterable[ToolSpec] = (), *,
                 max_tools: int = MAX_TOOLS_PER_SESSION,
                 limits: SchemaLimits = DEFAULT_LIMITS) -> None:
        self.session_id = session_id
        self._server = {spec.name: spec for spec in server_tools}  # checked when loaded
        if any(not spec.is_server for spec in self._server.values()):
            raise ValueError("server tools must be owned by 'server'")
        self._own: dict[str, ToolSpec] = {}
        self._max_tools = max_tools
        self._limits = limits

    def register(self, spec: ToolSpec) -> None:
        """Add or replace a session tool; its schema is checked here, once."""
        if spec.owner != self.session_id:
            raise ValueError(f"tool {spec.name} belongs to {spec.owner!r}, not this session")
        if spec.name in self._server:
            raise ToolRegistryError(f"{spec.name} is the name of a server tool; choose another")
        if spec.name not in self._own and len(self._own) >= self._max_tools:
            raise ToolRegistryError(f"a session may register at most {self._max_tools} tools")
        validate_schema(spec.parameters, self._limits)
        self._own[spec.name] = spec

    def unregister(self, name: str) -> bool:
        """Remove a session tool; False when the session has none of that name (server
        tools cannot be removed). Calls already made to it stay pending."""
        return self._own.pop(name, None) is not None

    def get(self, name: str) -> ToolSpec | None:
        return self._server.get(name) or self._own.get(name)

    def __len__(self) -> int:
        return len(self._server) + len(self._own)

    def described(self) -> list[dict[str, Any]]:
        """Every tool as `tool.register` describes one (the LLM providers' input shape)."""
        return [{"name": spec.name, "description": spec.description, "parameters": spec.parameters}
                for spec in (*self._server.values(), *self._own.values())]

    def for_model(self) -> list[dict[str, Any]]:
        """Server tools first, then the session's in the order they were first registered."""
        return [spec.for_model() for spec in (*self._server.values(), *self._own.values())]


def session_registry(session_id: str, decls: Iterable[Any], server_tools: Iterable[ToolSpec] = ()
                     ) -> tuple[ToolRegistry, list[str]]:
    """A registry of a session's declared tools (`ToolDecl`s: name, description, parameters,
    timeout_s) and the server's; a declaration it refuses is left out and its problem
    returned (the edge checked them already; the server's configuration may differ)."""
    registry, problems = ToolRegistry(session_id, server_tools), []
    for decl in decls:
        try:
            registry.register(ToolSpec(decl.name, decl.description, decl.parameters, decl.timeout_s,
                                       session_id))
        except (ParleyError, ValueError) as exc:
            problems.append(f"tool {decl.name} left out: {exc}")
    return registry, problems


@dataclass(slots=True)
class StepBudget:
    """Model rounds that asked for tools in one turn. A round counts once however many
    calls it makes in parallel; when the budget is spent the turn ends with reason
    "step_limit" (services/tools/turn.py)."""

    max_steps: int = 8
    used: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")

    @property
    def remaining(self) -> int:
        return self.max_steps - self.used

    @property
    def exhausted(self) -> bool:
        return self.used >= self.max_steps

    def take(self) -> bool:
        """Spend one step; False (and nothing spent) when none is left."""
        if self.exhausted:
            return False
        self.used += 1
        return True

    def reset(self) -> None:
        """A new turn starts."""
        self.used = 0


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How one call ended: an output, or an error with a protocol code."""

    call_id: str
    name: str
    output: Any = None
    error_code: str | None = None  # "tool_error" or "tool_timeout"; None: it succeeded
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def for_model(self) -> dict[str, Any]:
        """The OpenAI chat-completions `tool` message that answers the call."""
        if self.ok:
            content = self.output
        else:
            content = {"error": {"code": self.error_code, "message": self.error}}
        return {"role": "tool", "tool_call_id": self.call_id,
                "content": json.dumps(content, ensure_ascii=False, allow_nan=False)}


@dataclass(frozen=True, slots=True)
class PendingCall:
    call_id: str
    spec: ToolSpec
    arguments: dict[str, Any] = field(hash=False)
    started_at: float
    deadline: float
    waiting_for_resume: bool = False  # the client is gone; the deadline is the window's end


class PendingCalls:
    """The calls one session waits for. Server (webhook) calls only time out; calls to the
    client also wait through a disconnection, up to the end of the resume window."""

    def __init__(self) -> None:
        self._calls: dict[str, PendingCall] = {}
        self._window_end: float | None = None  # set while the client is disconnected

    def start(self, call_id: str, spec: ToolSpec, arguments: dict[str, Any],
              now: float) -> PendingCall:
        if call_id in self._calls:
            raise ValueError(f"call {call_id} is already pending")
        call = PendingCall(call_id, spec, arguments, now, now + spec.timeout_s)
        if self._window_end is not None and not spec.is_server:
            call = replace(call, deadline=self._window_end, waiting_for_resume=True)
        self._calls[call_id] = call
        return call

    def resolve(self, call_id: str, output: Any, now: float, *, error: str | None = None,
                owner: str | None = None) -> CallOutcome | None:
        """The answer to a call; None when it is unknown, already over, past its deadline
        (it will expire as a timeout), or — given `owner` — not that owner's call."""
        call = self._calls.get(call_id)
        if call is None or now > call.deadline or owner not in (None, call.spec.owner):
            return None
        del self._calls[call_id]
        if error is not None:
            return CallOutcome(call_id, call.spec.name, error_code="tool_error", error=error)
        return CallOutcome(call_id, call.spec.name, output=output)

    def expired(self, now: float) -> list[CallOutcome]:
        """Remove and answer the calls past their deadline, oldest first."""
        late = [call for call in self._calls.values() if now > call.deadline]
        for call in late:
            del self._calls[call.call_id]
        return [_late(call) for call in late]

    def suspend(self, now: float, window_s: float) -> None:
        """The client disconnected: its calls wait for a resume until the window ends."""
        self._window_end = now + window_s
        for call in list(self._calls.values()):
            if not call.spec.is_server:
                self._calls[call.call_id] = replace(call, deadline=self._window_end,
                                                    waiting_for_resume=True)

    def unanswered(self, now: float) -> list[PendingCall]:
        """The client is back (call on resume): its pending calls, oldest first, to send
        again, each with its full timeout from now."""
        self._window_end = None
        again = []
        for call in list(self._calls.values()):
            if not call.spec.is_server:
                call = replace(call, deadline=now + call.spec.timeout_s, waiting_for_resume=False)
                self._calls[call.call_id] = call
                again.append(call)
        return again

    def abandon_all(self, reason: str) -> list[CallOutcome]:
        """The turn or session is over (barge-in, session end): answer every call with an
        error and forget it."""
        outcomes = [CallOutcome(call.call_id, call.spec.name, error_code="tool_error",
                                error=reason) for call in self._calls.values()]
        self._calls.clear()
        self._window_end = None
        return outcomes

    def next_deadline(self) -> float | None:
        """When `expired` will next have something to say; None when nothing is pending."""
        return min((call.deadline for call in self._calls.values()), default=None)

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls


def _late(call: PendingCall) -> CallOutcome:
    if call.waiting_for_resume:
        return CallOutcome(call.call_id, call.spec.name, error_code="tool_error",
                           error=f"the client that runs {call.spec.name} disconnected and "
                                 "did not come back in time")
    return CallOutcome(call.call_id, call.spec.name, error_code="tool_timeout",
                       error=f"{call.spec.name} did not answer within {call.spec.timeout_s:g} s")
