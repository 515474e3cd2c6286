"""The edge's side of an assistant session (pure): the client's tools and the reply playing.

- Tools: checked when registered (name, description, timeout, JSON Schema — a schema that
  is not a valid, reasonably small object schema is refused with `tool_error`), kept in
  the session record as the client sent them, and turned into the `Assistant` config that
  travels to the workers.
- Playback: which reply the client is hearing and until when (audio is sent faster than
  real time, so "talking" lasts until the sent audio has had time to play). Speech that
  starts meanwhile, or `response.cancel`, cancels that reply; the edge then drops any
  further audio of it itself, so nothing more of it reaches the client even if a worker
  is slow to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.tools.registry import ToolRegistry, ToolSpec, client_spec
from shared.errors import ParleyError
from shared.messages import Assistant, ToolDecl

MAX_CANCELLED = 64  # recent cancelled replies whose late audio is dropped


def tool_record(name: str, description: str, parameters: dict, timeout_ms: int | None) -> dict:
    return {"name": name, "description": description, "parameters": parameters, "timeout_ms": timeout_ms}


def _spec(sid: str, tool: dict) -> ToolSpec:
    return client_spec(tool["name"], tool["description"], tool["parameters"], owner=sid,
                       timeout_ms=tool.get("timeout_ms"))


@dataclass
class AssistantState:
    sid: str
    instructions: str
    registry: ToolRegistry
    tools: dict[str, dict] = field(default_factory=dict)  # name → as registered, in order
    playing: str | None = None  # response id being heard
    generating: bool = False  # its response.done has not arrived yet
    playing_until: float = 0.0  # when the audio sent so far has played out
    cancelled: list[str] = field(default_factory=list)

    def register(self, tool: dict) -> None:
        """Add or replace a tool; ParleyError (`tool_error`) says why one is refused."""
        try:
            self.registry.register(_spec(self.sid, tool))
        except ParleyError as exc:
            raise type(exc)(f"tool {tool['name']!r} refused: {exc}") from None
        self.tools[tool["name"]] = tool

    def unregister(self, name: str) -> bool:
        if not self.registry.unregister(name):
            return False
        del self.tools[name]
        return True

    def config(self, language: str, output_sample_rate: int, voice: str | None,
               engine: str = "pipeline") -> Assistant:
        decls = tuple(ToolDecl(spec.name, spec.description, spec.parameters, spec.timeout_s)
                      for spec in (self.registry.get(name) for name in self.tools))
        return Assistant(self.instructions, decls, language, output_sample_rate, voice, engine)

    # ---- playback -------------------------------------------------------------------------

    def should_send(self, event: dict, now: float, output_sample_rate: int) -> bool:
        """Track the reply being heard; False for audio of a cancelled reply."""
        rid, kind = event.get("response_id"), event.get("type")
        if rid is None:
            return True
        if rid in self.cancelled:
            return kind not in ("audio.delta", "audio.done")
        if kind in ("response.text", "audio.delta") and self.playing != rid:
            self.playing, self.generating = rid, True
        if kind == "audio.delta" and self.playing == rid:
            seconds = len(event.get("audio") or b"") / 2 / output_sample_rate
            self.playing_until = max(self.playing_until, now) + seconds
        elif kind == "response.done" and self.playing == rid:
            self.generating = False
        return True

    def talking(self, now: float) -> str | None:
        """The reply the client is hearing, or that is still being written, if any."""
        if self.playing and (self.generating or now < self.playing_until):
            return self.playing
        return None

    def cancel(self, rid: str) -> None:
        self.cancelled.append(rid)
        del self.cancelled[:-MAX_CANCELLED]
        if self.playing == rid:
            self.playing, self.generating, self.playing_until = None, False, 0.0


def new_state(sid: str, instructions: str | None, tools: tuple[dict, ...],
              server_specs: list[ToolSpec]) -> tuple[AssistantState, list[str]]:
    """The state of a starting session and the problems of tools that were refused."""
    state = AssistantState(sid, instructions or "", ToolRegistry(sid, server_specs))
    problems = []
    for tool in tools:
        try:
            state.register(tool)
        except ParleyError as exc:
            problems.append(str(exc))
    return state, problems
