"""Server-side tools: webhooks declared in the configuration, called with a signed POST.

Configuration (TOML), one table per tool:

    [[tools.webhook]]
    name = "get_weather"                  # ^[A-Za-z0-9_-]{1,64}$, unique
    description = "Current weather in a city"
    url = "https://hooks.example.com/weather"
    secret = "WEATHER_HOOK_SECRET"        # the NAME of the env var holding the HMAC key
    timeout_ms = 5000                     # optional: 10000 by default, at most 30000
    [tools.webhook.parameters]            # a JSON Schema, checked like a client's;
    type = "object"                       # or parameters = '<the schema as JSON text>'

Signing scheme. Parley sends `POST <url>` with `Content-Type: application/json` and the body
`{"call_id": ..., "name": ..., "arguments": {...}}` (compact UTF-8 JSON), and the headers
    X-Parley-Timestamp: <unix time, whole seconds>
    X-Parley-Signature: sha256=<lowercase hex HMAC-SHA256(key, "<timestamp>." + body)>
where the key is the secret's UTF-8 bytes and body the exact bytes sent. A receiver
recomputes the HMAC over the raw body it read, compares in constant time, and refuses a
timestamp more than 300 s from its own clock (a captured request cannot be replayed later;
`call_id` lets it drop a duplicate within that window). `verify_signature` does all of it.

The receiver answers 2xx with a JSON object (at most 64 KiB): the tool's output, given to the
model as is. Any other status, a body that is not a JSON object, or a transport failure is
`ToolCallError` (`tool_error`); no full answer within the tool's timeout (the whole request,
not each read) is `ToolTimeout` (`tool_timeout`). Calls are never retried: a webhook may have
side effects. Redirects are not followed. The secret never appears in a message or a repr.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.tools.registry import SERVER_OWNER, ToolSpec, ToolSpecError
from services.tools.schema import (
    DEFAULT_LIMITS,
    SchemaLimits,
    ToolSchemaError,
    validate_schema,
)
from shared.errors import ParleyError
from shared.secrets import Secret

TIMESTAMP_HEADER = "X-Parley-Timestamp"
SIGNATURE_HEADER = "X-Parley-Signature"
DEFAULT_TIMEOUT_MS = 10_000
MAX_ANSWER_BYTES = 64 * 1024
_FIELDS = {"name", "description", "parameters", "url", "secret", "timeout_ms"}
_REQUIRED = _FIELDS - {"timeout_ms"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class ToolCallError(ParleyError, code="tool_error"):
    """A tool ran but failed: a non-2xx status, an answer that is not a JSON object, or the
    receiver could not be reached."""


class ToolTimeout(ParleyError, code="tool_timeout"):
    """A tool gave no full answer within its timeout."""


@dataclass(frozen=True, slots=True)
class WebhookTool:
    spec: ToolSpec  # owner "server"
    url: str
    secret: Secret  # shows itself as '********'
    secret_env: str  # the variable it was read from, for operators' messages

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------- configuration

def load_webhooks(path: str | Path, env: Mapping[str, str] | None = None,
                  limits: SchemaLimits = DEFAULT_LIMITS) -> list[WebhookTool]:
    """The `[[tools.webhook]]` tables of a TOML file; ValueError names the first problem."""
    with Path(path).open("rb") as handle:
        tools_table = tomllib.load(handle).get("tools", {})
    entries = tools_table.get("webhook", []) if isinstance(tools_table, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: tools.webhook must be an array of tables ([[tools.webhook]])")
    environ = os.environ if env is None else env
    tools = [_webhook(entry, environ, limits, f"{path}: tools.webhook[{i}]")
             for i, entry in enumerate(entries)]
    names = [tool.name for tool in tools]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{path}: webhook tools named more than once: {twice}")
    return tools


def configured_webhooks(env: Mapping[str, str] | None = None) -> list[WebhookTool]:
    """The webhooks of the `PARLEY_CONFIG` file; none when it is not set."""
    environ = os.environ if env is None else env
    path = environ.get("PARLEY_CONFIG")
    return load_webhooks(path, environ) if path else []


def _webhook(entry: dict[str, Any], env: Mapping[str, str], limits: SchemaLimits,
             where: str) -> WebhookTool:
    if unknown := set(entry) - _FIELDS:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    if missing := _REQUIRED - set(entry):
        raise ValueError(f"{where}: missing fields {sorted(missing)}")
    timeout_ms = entry.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if type(timeout_ms) is not int:
        raise ValueError(f"{where}: timeout_ms must be an integer")
    try:
        parameters = _parameters(entry["parameters"])
        spec = ToolSpec(entry["name"], entry["description"], parameters, timeout_ms / 1000,
                        SERVER_OWNER)
        validate_schema(parameters, limits)
    except (ToolSpecError, ToolSchemaError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    where = f"{where} ({spec.name})"
    return WebhookTool(spec, _url(entry["url"], where), *_secret(entry["secret"], env, where))


def _parameters(value: Any) -> Any:
    """A TOML table, or JSON text (TOML has no null, which some schemas need)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise ToolSchemaError("parameters given as text must be JSON") from None


def _url(value: Any, where: str) -> str:
    try:
        url = httpx.URL(value) if isinstance(value, str) else None
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{where}: url must be an absolute http or https URL")
    return value


def _secret(name: Any, env: Mapping[str, str], where: str) -> tuple[Secret, str]:
    # The value is never quoted: an operator may have put the secret itself here by mistake.
    if not isinstance(name, str) or not _ENV_NAME.fullmatch(name) or not env.get(name):
        raise ValueError(f"{where}: secret must be the name of a set, non-empty environment "
                         "variable holding the HMAC key")
    return Secret(env[name]), name


# ---------------------------------------------------------------- signing

def sign(secret: Secret | str | bytes, timestamp: str | int, body: bytes) -> str:
    """The `X-Parley-Signature` value: `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`."""
    key = secret.reveal() if isinstance(secret, Secret) else secret
    key_bytes = key.encode() if isinstance(key, str) else key
    mac = hmac.new(key_bytes, f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: Secret | str | bytes, timestamp: Any, body: bytes,
                     signature: Any, now: float, tolerance_s: float = 300) -> bool:
    """True when `signature` signs `body` at `timestamp`, and that time is within
    `tolerance_s` of `now` (unix seconds). Pass the header values as received; malformed
    ones are simply False."""
    stamp = str(timestamp) if isinstance(timestamp, (str, int)) else ""
    if not _TIMESTAMP.fullmatch(stamp) or abs(now - int(stamp)) > tolerance_s:
        return False
    if not isinstance(signature, str):
        return False
    expected = sign(secret, stamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def request_body(call_id: str, name: str, arguments: dict[str, Any]) -> bytes:
    """The exact bytes POSTed and signed."""
    payload = {"call_id": call_id, "name": name, "arguments": arguments}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


# ---------------------------------------------------------------- calling

async def call_webhook(tool: WebhookTool, call_id: str, arguments: dict[str, Any],
                       http: httpx.AsyncClient, *,
                       clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """POST one signed call and return the receiver's JSON object. Arguments must already
    have passed `validate_arguments`. Raises ToolTimeout or ToolCallError."""
    body = request_body(call_id, tool.name, arguments)
    stamp = str(int(clock()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp,
               SIGNATURE_HEADER: sign(tool.secret, stamp, body)}
    try:
        async with asyncio.timeout(tool.spec.timeout_s):  # the whole exchange, not each read
            raw = await _post(tool, body, headers, http)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ToolTimeout(f"webhook {tool.name} did not answer within "
                          f"{tool.spec.timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise ToolCallError(f"webhook {tool.name} unreachable ({type(exc).__name__})") from exc
    return _answer(tool.name, raw)


async def _post(tool: WebhookTool, body: bytes, headers: dict[str, str],
                http: httpx.AsyncClient) -> bytes:
    request = http.build_request("POST", tool.url, content=body, headers=headers,
                                 timeout=tool.spec.timeout_s)
    response = await http.send(request, stream=True, follow_redirects=False)
    try:
        if not 200 <= response.status_code < 300:
            raise ToolCallError(f"webhook {tool.name} answered HTTP {response.status_code}")
        raw = bytearray()
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) > MAX_ANSWER_BYTES:
                raise ToolCallError(f"webhook {tool.name} answered more than "
                                    f"{MAX_ANSWER_BYTES} bytes")
        return bytes(raw)
    finally:
        await response.aclose()


def _answer(name: str, raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except ValueError:  # also UnicodeDecodeError
        raise ToolCallError(f"webhook {name} did not answer JSON") from None
    if not isinstance(value, dict):
        raise ToolCallError(f"webhook {name} must answer a JSON object, not "
                            f"{type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
