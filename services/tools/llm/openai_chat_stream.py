"""The assistant's LLM over streamed OpenAI chat completions (or any OpenAI-compatible server).

Pure core, thin driver: `SseDecoder` turns body bytes, cut anywhere by the network, into
the `data` of each server-sent event; `ChatStreamParser` turns those into `LlmEvent`s,
assembling each tool call's argument fragments by `index`. `OpenAIChatLlm` only moves
bytes, bounds the waits and maps failures to the project's error vocabulary. One attempt
per call: retries and fallback live elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx

from services.tools.llm.provider import LlmEvent, TextDelta, ToolCallRequest, TurnEnd
from shared.errors import ProviderBadResponse, ProviderError, ProviderUnavailable
from shared.http_errors import openai_error, status_error, transport_error
from shared.secrets import Secret
from shared.usage import Usage, record

log = logging.getLogger("parley.tools")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4.1-nano"
_DRAIN_S = 0.5  # after [DONE]: long enough for the body's end, so the connection is reused

# An error sent inside a stream has no HTTP status; these codes say which one it stands for.
# Only these known codes reach our messages: nothing the vendor wrote is passed on.
_STREAM_ERROR_STATUS = {"invalid_api_key": 401, "insufficient_quota": 429,
                        "rate_limit_exceeded": 429, "server_error": 500}


# ---- requests (pure) --------------------------------------------------------------------


def openai_tool(tool: dict) -> dict:
    """A `tool.register`-shaped description as a chat-completions function tool."""
    if tool.get("type") == "function" and "function" in tool:
        return tool  # already in the vendor's shape
    function = {"name": tool["name"], "description": tool.get("description", ""),
                "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    return {"type": "function", "function": function}


def chat_stream_request(model: str, messages: list[dict], tools: list[dict],
                        instructions: str | None) -> dict:
    system = [{"role": "system", "content": instructions}] if instructions else []
    body: dict = {"model": model, "messages": system + list(messages), "stream": True,
                  "stream_options": {"include_usage": True}}
    if tools:  # the API rejects an empty `tools` list
        body["tools"] = [openai_tool(t) for t in tools]
        body["tool_choice"] = "auto"
    return body


# ---- server-sent events (pure) ----------------------------------------------------------


class SseDecoder:
    """Body bytes in any pieces → the `data` of each complete event.

    Follows the SSE rules that matter here: `\\n` or `\\r\\n` line ends, `:` comments
    (keep-alives), several `data:` lines joined by `\\n`, other fields ignored. Lines are
    cut on bytes before decoding, so a UTF-8 character split between reads survives.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()  # the start of a line still arriving
        return [data for line in lines if (data := self._line(line)) is not None]

    def close(self) -> list[str]:
        """At the end of the body: an event the server did not end with a blank line."""
        rest = [data for data in (self._line(self._tail), self._line(b"")) if data is not None]
        self._tail = b""
        return rest

    def _line(self, raw: bytes) -> str | None:
        line = raw.removesuffix(b"\r").decode("utf-8", "replace")
        if not line:
            data, self._data = self._data, []
            return "\n".join(data) if data else None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None  # a comment (empty name) or a field we do not use


# ---- chat completion chunks → events (pure) ---------------------------------------------


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def decode_chunk(data: str) -> dict:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ProviderBadResponse("openai stream sent a chunk that is not JSON") from exc
    if not isinstance(chunk, dict):
        raise ProviderBadResponse("openai stream sent a chunk that is not an object")
    return chunk


def stream_error(error: object) -> ProviderError:
    """An `{"error": …}` sent mid-stream; unknown ones count as the server's failure."""
    fields = error if isinstance(error, dict) else {}
    for code in (fields.get("code"), fields.get("type")):
        if isinstance(code, str) and code in _STREAM_ERROR_STATUS:
            return status_error("openai", _STREAM_ERROR_STATUS[code], code)
    return status_error("openai", 500)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class ChatStreamParser:
    """The body of one streamed chat completion → `LlmEvent`s.

    Tool calls are announced when the choice finishes (their arguments are complete only
    then); `TurnEnd` comes at `[DONE]`, after the usage chunk, so `usage` is known by then.
    """

    def __init__(self) -> None:
        self._sse = SseDecoder()
        self._calls: dict[int, _PartialCall] = {}
        self._called = False
        self._seen_data = False
        self.finish_reason: str | None = None
        self.usage: tuple[int, int] | None = None  # (input_tokens, output_tokens)
        self.done = False  # TurnEnd was emitted; nothing after it counts

    def feed(self, chunk: bytes) -> list[LlmEvent]:
        return self._events(self._sse.feed(chunk))

    def end(self) -> list[LlmEvent]:
        """The body ended (without an error): the turn must be complete by now."""
        events = self._events(self._sse.close())
        if self.done:
            return events
        if self.finish_reason is not None:  # only `[DONE]` missing: lenient servers
            return events + self._turn_end()
        if not self._seen_data:
            raise ProviderBadResponse("openai answered without an event stream")
        raise ProviderUnavailable("openai stream ended before the turn was complete")

    def _events(self, payloads: list[str]) -> list[LlmEvent]:
        events: list[LlmEvent] = []
        for data in payloads:
            if self.done:
                break
            self._seen_data = True
            events.extend(self._payload(data))
        return events

    def _payload(self, data: str) -> list[LlmEvent]:
        if data.strip() == "[DONE]":
            return self._turn_end()
        chunk = decode_chunk(data)
        if chunk.get("error") is not None:  # some servers send `"error": null` throughout
            raise stream_error(chunk["error"])
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = (_count(usage.get("prompt_tokens")),
                          _count(usage.get("completion_tokens")))
        choices = chunk.get("choices")
        choices = choices if isinstance(choices, list) else []
        # We ask for one choice; a server numbering it oddly still has it first.
        first = next((c for c in choices if isinstance(c, dict)), None)
        return list(self._choice(first)) if first is not None else []

    def _choice(self, choice: dict) -> Iterator[LlmEvent]:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        for key in ("content", "refusal"):  # a refusal is said to the person too
            text = delta.get(key)
            if isinstance(text, str) and text:
                yield TextDelta(text)
        fragments = delta.get("tool_calls")
        for fragment in fragments if isinstance(fragments, list) else []:
            self._fragment(fragment)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish and self.finish_reason is None:
            self.finish_reason = finish
            yield from self._complete_calls()

    def _fragment(self, fragment: object) -> None:
        if not isinstance(fragment, dict):
            raise ProviderBadResponse("openai stream sent a malformed tool call")
        call = self._calls.setdefault(self._index_of(fragment), _PartialCall())
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        # The id and the name come whole in the first fragment; some servers repeat them.
        call.call_id = call.call_id or str(fragment.get("id") or "")
        call.name = call.name or str(function.get("name") or "")
        pieces = function.get("arguments")
        if isinstance(pieces, str):
            call.arguments.append(pieces)

    def _index_of(self, fragment: dict) -> int:
        index = fragment.get("index")
        if isinstance(index, int):
            return index
        # No index (some compatible servers): a new id starts a new call.
        known = {c.call_id: i for i, c in self._calls.items()}
        call_id = fragment.get("id")
        if call_id and call_id not in known:
            return max(self._calls, default=-1) + 1
        return known.get(call_id, max(self._calls, default=0))

    def _complete_calls(self) -> list[LlmEvent]:
        events: list[LlmEvent] = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.name:
                raise ProviderBadResponse("openai stream sent a tool call without a name")
            events.append(ToolCallRequest(call.call_id or f"call_{index}", call.name,
                                          "".join(call.arguments) or "{}"))
        self._called = self._called or bool(events)
        self._calls.clear()
        return events

    def _turn_end(self) -> list[LlmEvent]:
        events = self._complete_calls()  # calls that never saw a finish_reason
        self.done = True
        reason = self.finish_reason or ("tool_calls" if self._called else "stop")
        return events + [TurnEnd(reason)]


# ---- the adapter (I/O) ------------------------------------------------------------------


class OpenAIChatLlm:
    """`POST {base_url}/chat/completions` with `stream: true`, as an `LlmProvider`.

    `timeout_s` bounds the wait for the first event (request, response head and the first
    chunks together) and then every single read, so a stream that stalls midway fails
    with `ProviderTimeout` while a long reply that keeps flowing is fine.
    """

    def __init__(
        self,
        api_key: Secret,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        name: str = "openai",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name, self.model = name, model
        self._key = api_key
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._timeout_s = timeout_s
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))

    def __repr__(self) -> str:
        return f"OpenAIChatLlm(name={self.name!r}, model={self.model!r})"

    async def stream(self, messages: list[dict], tools: list[dict], *,
                     instructions: str | None = None) -> AsyncIterator[LlmEvent]:
        body = chat_stream_request(self.model, messages, tools, instructions)
        first_deadline = asyncio.get_running_loop().time() + self._timeout_s
        response = await self._open(body, first_deadline)
        try:
            reads = response.aiter_bytes()
            async for event in self._events(reads, first_deadline):
                yield event
            await self._drain(reads)
        finally:  # a consumer that stops early frees the connection now
            await response.aclose()

    async def _open(self, body: dict, deadline: float) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._key.reveal()}",
                   "Accept": "text/event-stream"}
        request = self._http.build_request("POST", self._url, json=body, headers=headers,
                                           timeout=self._timeout_s)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._http.send(request, stream=True)
        except (TimeoutError, httpx.RequestError) as exc:
            raise transport_error("openai", exc) from exc
        if response.status_code == 200:
            return response
        try:
            async with asyncio.timeout_at(deadline):
                raw = await response.aread()
        except (TimeoutError, httpx.RequestError):
            raw = b""  # the status alone decides
        finally:
            await response.aclose()
        raise openai_error(response.status_code, raw, self._key)

    async def _events(self, reads: AsyncIterator[bytes],
                      first_deadline: float) -> AsyncIterator[LlmEvent]:
        parser, deadline = ChatStreamParser(), first_deadline
        while not parser.done:
            data = await self._read(reads, deadline)
            events = parser.feed(data) if data is not None else parser.end()
            if parser.done:  # before TurnEnd goes out: the meter is complete when it arrives
                self._record(parser.usage)
            for event in events:
                yield event
            if events:
                deadline = None  # output started: from now on each read has its own bound

    async def _read(self, reads: AsyncIterator[bytes], deadline: float | None) -> bytes | None:
        loop = asyncio.get_running_loop()
        when = deadline if deadline is not None else loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(when):
                return await anext(reads, None)
        except (TimeoutError, httpx.RequestError) as exc:
            raise transport_error("openai", exc) from exc

    async def _drain(self, reads: AsyncIterator[bytes]) -> None:
        """Read the body's end after `[DONE]`, so the pool can reuse the connection."""
        try:
            async with asyncio.timeout(min(self._timeout_s, _DRAIN_S)):
                async for _ in reads:
                    pass
        except (TimeoutError, httpx.RequestError) as exc:  # the turn is complete anyway
            log.debug("openai stream did not end cleanly after [DONE]: %s", type(exc).__name__)

    def _record(self, usage: tuple[int, int] | None) -> None:
        input_tokens, output_tokens = usage or (0, 0)  # servers may ignore include_usage
        record(Usage(provider="openai", model=self.model, capability="llm",
                     input_tokens=input_tokens, output_tokens=output_tokens))

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()
