"""One assistant turn as a pure state machine: events in, actions out, time passed in.

The I/O runner in the tools worker calls `start()`, then feeds the model's stream
(`on_llm_event`), tool answers (`on_tool_result`), clock ticks (`on_tick`, at
`next_deadline()`) and barge-in (`cancel`), and carries out the returned actions in order.

A model step streams text (spoken sentence by sentence) and may ask for tools. Its calls are
collected until the step's `TurnEnd`, then checked: an unknown tool or arguments that do not
fit the registered schema get an error result for the model at once and are never called.
When every call of the step has an answer (result, error or timeout), the assistant message
with its `tool_calls` and all the results are persisted together, in call order, so history
never holds a call without its answer; then the model is asked again, unless the
`StepBudget` is spent. After `Finish` every input yields no actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.tools.llm.provider import (
    LlmEvent,
    TextDelta,
    ToolCallRequest,
    TurnEnd,
    assistant_message,
    parse_arguments,
    user_message,
)
from services.tools.llm.sentences import SentenceStreamer
from services.tools.registry import (
    CallOutcome,
    PendingCalls,
    StepBudget,
    ToolArgumentsError,
    ToolRegistry,
    validate_arguments,
)

__all__ = [
    "Action", "AppendHistory", "CallClientTool", "CallServerTool", "ContinueLlm", "Finish",
    "Say", "Turn",
]


@dataclass(frozen=True, slots=True)
class Say:
    """A complete sentence: publish as `response.text` and speak, in `index` order."""
    response_id: str
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class CallClientTool:
    """Send a durable `tool.call` to the session that owns the tool."""
    call_id: str
    name: str
    arguments: dict[str, Any] = field(hash=False)
    owner: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class CallServerTool:
    """Call the server's webhook tool; feed its answer back with `on_tool_result`."""
    call_id: str
    name: str
    arguments: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class ContinueLlm:
    """Stream the next model step over these messages (the whole conversation so far)."""
    messages: list[dict] = field(hash=False)


@dataclass(frozen=True, slots=True)
class AppendHistory:
    """Persist these messages at the end of the session's history."""
    messages: list[dict] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Finish:
    response_id: str
    reason: str  # "stop", "cancelled", "step_limit" or "error"


Action = Say | CallClientTool | CallServerTool | ContinueLlm | AppendHistory | Finish

_STREAMING, _WAITING, _DONE = "streaming", "waiting", "done"


class Turn:
    def __init__(self, response_id: str, registry: ToolRegistry, budget: StepBudget,
                 history: list[dict], user_text: str, now: float) -> None:
        self.response_id = response_id
        self.registry = registry
        self.budget = budget
        self.started_at = now
        self._user = user_message(user_text)
        self._messages = [*history, self._user]  # a copy: the caller's list stays as it was
        self._streamer = SentenceStreamer()
        self._pending = PendingCalls()
        self._index = 0  # of the next sentence, across every step of the turn
        self._phase = _STREAMING
        self._new_step()

    @property
    def done(self) -> bool:
        return self._phase == _DONE

    def start(self) -> list[Action]:
        """The user's words are history even if the reply is cancelled; ask the model."""
        return [AppendHistory([self._user]), ContinueLlm(list(self._messages))]

    def next_deadline(self) -> float | None:
        """When `on_tick` next has something to do; None when no call is pending."""
        return None if self.done else self._pending.next_deadline()

    # ---- inputs ---------------------------------------------------------------------------

    def on_llm_event(self, event: LlmEvent, now: float) -> list[Action]:
        if self._phase != _STREAMING:
            return []  # a stream that outlived its step, or the turn
        match event:
            case TextDelta(text=text):
                self._text.append(text)
                return self._say(self._streamer.feed(text))
            case ToolCallRequest(call_id=call_id):
                if all(c.call_id != call_id for c in self._calls):  # a repeat would break history
                    self._calls.append(event)
                return []
            case TurnEnd():
                return self._say(self._streamer.flush()) + self._end_step(now)
        return []

    def on_tool_result(self, call_id: str, output: Any, error: str | None,
                       now: float) -> list[Action]:
        if self._phase != _WAITING:
            return []
        outcome = self._pending.resolve(call_id, output, now, error=error)
        if outcome is None:
            return []  # not this turn's call, already answered, or past its deadline
        self._outcomes[call_id] = outcome
        return self._maybe_close_step()

    def on_tick(self, now: float) -> list[Action]:
        if self._phase != _WAITING:
            return []
        for outcome in self._pending.expired(now):
            self._outcomes[outcome.call_id] = outcome
        return self._maybe_close_step()

    def is_waiting_for(self, call_id: str) -> bool:
        """Whether an answer to `call_id` would be taken now."""
        return self._phase == _WAITING and call_id in self._pending

    def on_client_gone(self, now: float, window_s: float) -> list[Action]:
        """The client dropped: its calls wait for a resume until the window ends."""
        if not self.done:
            self._pending.suspend(now, window_s)
        return []

    def on_client_back(self, now: float) -> list[Action]:
        """The client resumed: send its unanswered calls again, each with a fresh timeout."""
        if self.done:
            return []
        return [CallClientTool(c.call_id, c.spec.name, c.arguments, c.spec.owner, c.spec.timeout_s)
                for c in self._pending.unanswered(now)]

    def cancel(self, now: float) -> list[Action]:
        """Barge-in: stop at once; keep in history only what was already said."""
        return self._abort("cancelled")

    def on_llm_error(self, now: float) -> list[Action]:
        """The model failed for good (after any fallback): end the turn."""
        return self._abort("error")

    # ---- steps ----------------------------------------------------------------------------

    def _new_step(self) -> None:
        self._text: list[str] = []
        self._said: list[str] = []
        self._calls: list[ToolCallRequest] = []
        self._outcomes: dict[str, CallOutcome] = {}

    def _say(self, sentences: list[str]) -> list[Action]:
        actions: list[Action] = []
        for text in sentences:
            actions.append(Say(self.response_id, self._index, text))
            self._said.append(text)
            self._index += 1
        return actions

    def _end_step(self, now: float) -> list[Action]:
        text = "".join(self._text)
        if not self._calls:
            return [AppendHistory([assistant_message(text)]), *self._finish("stop")]
        if not self.budget.take():  # spent before this step: its calls are never made
            return [AppendHistory([assistant_message(text)]), *self._finish("step_limit")]
        self._phase = _WAITING
        actions = [self._start_call(call, now) for call in self._calls]
        return [a for a in actions if a is not None] + self._maybe_close_step()

    def _start_call(self, call: ToolCallRequest, now: float) -> Action | None:
        """The action that makes a valid call; None (and an error result) for another."""
        spec = self.registry.get(call.name)
        arguments = parse_arguments(call)
        if spec is None:
            return self._reject(call, f"there is no tool named {call.name!r}")
        if arguments is None:
            return self._reject(call, f"the arguments of {call.name} must be a JSON object")
        try:
            validate_arguments(spec, arguments)
        except ToolArgumentsError as exc:
            return self._reject(call, str(exc))
        self._pending.start(call.call_id, spec, arguments, now)
        if spec.is_server:
            return CallServerTool(call.call_id, spec.name, arguments)
        return CallClientTool(call.call_id, spec.name, arguments, spec.owner, spec.timeout_s)

    def _reject(self, call: ToolCallRequest, message: str) -> None:
        self._outcomes[call.call_id] = CallOutcome(call.call_id, call.name,
                                                   error_code="tool_error", error=message)

    def _maybe_close_step(self) -> list[Action]:
        if len(self._outcomes) < len(self._calls):
            return []
        step = [assistant_message("".join(self._text), self._calls)]
        step += [_for_model(self._outcomes[call.call_id]) for call in self._calls]
        self._messages += step
        if self.budget.exhausted:
            return [AppendHistory(step), *self._finish("step_limit")]
        self._new_step()
        self._phase = _STREAMING
        return [AppendHistory(step), ContinueLlm(list(self._messages))]

    def _abort(self, reason: str) -> list[Action]:
        if self.done:
            return []
        self._streamer.flush()  # never spoken, so not history either
        said = " ".join(self._said)  # calls of this step are dropped: they have no answers
        actions: list[Action] = [AppendHistory([assistant_message(said)])] if said else []
        return actions + self._finish(reason)

    def _finish(self, reason: str) -> list[Action]:
        self._phase = _DONE
        self._pending.abandon_all(reason)  # later answers to them are ignored
        return [Finish(self.response_id, reason)]


def _for_model(outcome: CallOutcome) -> dict:
    """The tool message; an output JSON cannot carry (NaN, a set) becomes an error."""
    try:
        return outcome.for_model()
    except (TypeError, ValueError):
        return CallOutcome(outcome.call_id, outcome.name, error_code="tool_error",
                           error="the tool's output is not valid JSON").for_model()
