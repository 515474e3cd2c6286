"""Webhook tools against a real local receiver that checks signatures; config loading."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from services.tools.registry import SERVER_OWNER, ToolSpec
from services.tools.webhooks import (
    ToolCallError,
    ToolTimeout,
    WebhookTool,
    call_webhook,
    load_webhooks,
    request_body,
    sign,
    verify_signature,
)
from shared.natsd import free_port
from shared.secrets import Secret
from tests.fakes.webhook_receiver import ORDER, SECRET, FakeReceiver

@pytest.fixture(scope="module")
def receiver():
    with FakeReceiver() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(receiver):
    receiver.knobs.reset()
    receiver.clear_log()


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def tool(url: str, *, secret: str = SECRET, timeout_s: float = 2.0) -> WebhookTool:
    spec = ToolSpec("lookup_order", "Order status", ORDER, timeout_s, SERVER_OWNER)
    return WebhookTool(spec, url, Secret(secret), "ORDER_HOOK_SECRET")


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__ or ""), repr(exc.__cause__ or "")):
        assert SECRET not in text


# ---- the signed request -----------------------------------------------------------------

async def test_a_call_is_a_signed_json_post_and_returns_the_answer(receiver, http):
    before = int(time.time())
    answer = await call_webhook(tool(receiver.url), "call-1", {"order_id": "A17"}, http)
    assert answer == {"order_id": "A17", "status": "shipped"}
    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/hooks/order")
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"call_id": "call-1", "name": "lookup_order",
                            "arguments": {"order_id": "A17"}}
    assert request.body == request_body("call-1", "lookup_order", {"order_id": "A17"})
    stamp = request.headers["x-parley-timestamp"]
    assert stamp.isdigit() and before <= int(stamp) <= time.time()
    signature = request.headers["x-parley-signature"]
    assert signature == sign(SECRET, stamp, request.body) and signature.startswith("sha256=")
    assert verify_signature(SECRET, stamp, request.body, signature, now=time.time())
    assert SECRET.encode() not in request.body + json.dumps(request.headers).encode()


async def test_the_clock_sets_the_timestamp_and_a_stale_one_is_refused(receiver, http):
    with pytest.raises(ToolCallError, match="HTTP 401") as caught:
        await call_webhook(tool(receiver.url), "c", {"order_id": "A"}, http,
                           clock=lambda: time.time() - 301)
    assert caught.value.code == "tool_error"
    [request] = receiver.requests
    assert int(request.headers["x-parley-timestamp"]) <= time.time() - 300


async def test_a_wrong_secret_fails_the_receivers_check(receiver, http):
    with pytest.raises(ToolCallError, match="HTTP 401") as caught:
        await call_webhook(tool(receiver.url, secret="not-" + SECRET), "c", {"order_id": "A"}, http)
    assert "not-" not in str(caught.value)


# ---- failures ---------------------------------------------------------------------------

async def test_a_hang_is_cut_at_the_tools_timeout(receiver, http):
    receiver.knobs.set(hang=True)
    started = time.monotonic()
    with pytest.raises(ToolTimeout, match="within 0.3 s") as caught:
        await call_webhook(tool(receiver.url, timeout_s=0.3), "c", {"order_id": "A"}, http)
    assert 0.25 < time.monotonic() - started < 1.5
    assert caught.value.code == "tool_timeout"
    assert_no_secret(caught.value)


async def test_the_timeout_covers_the_whole_answer_not_each_read(receiver, http):
    receiver.knobs.set(chunk_delay_s=0.2)  # each read in time, the whole answer not
    with pytest.raises(ToolTimeout):
        await call_webhook(tool(receiver.url, timeout_s=0.3), "c", {"order_id": "A"}, http)
    receiver.knobs.set(chunk_delay_s=0.05)
    answer = await call_webhook(tool(receiver.url, timeout_s=1.0), "c", {"order_id": "A"}, http)
    assert answer["status"] == "shipped"


@pytest.mark.parametrize(("knobs", "reason"), [
    ({"status": 500}, "answered HTTP 500"),
    ({"status": 404}, "answered HTTP 404"),
    ({"status": 302}, "answered HTTP 302"),  # redirects are not followed
    ({"malformed": True}, "did not answer JSON"),
    ({"reply_text": '["not", "an", "object"]'}, "must answer a JSON object"),
    ({"reply_text": '{"a": NaN}'}, "did not answer JSON"),
    ({"reply_text": json.dumps({"blob": "x" * 70_000})}, "more than 65536 bytes"),
])  # fmt: skip
async def test_bad_answers_are_tool_errors_without_secrets(receiver, http, knobs, reason):
    receiver.knobs.set(**knobs)
    with pytest.raises(ToolCallError, match=reason) as caught:
        await call_webhook(tool(receiver.url), "c", {"order_id": "A"}, http)
    assert caught.value.code == "tool_error"
    assert "stack trace" not in str(caught.value)  # the receiver's body is not passed on
    assert_no_secret(caught.value)


async def test_an_unreachable_receiver_is_a_tool_error(http):
    with pytest.raises(ToolCallError, match="unreachable") as caught:
        await call_webhook(tool(f"http://127.0.0.1:{free_port()}/hook"), "c", {"order_id": "A"},
                           http)
    assert_no_secret(caught.value)


# ---- verify_signature -------------------------------------------------------------------

BODY = b'{"call_id":"c","name":"lookup_order","arguments":{}}'
NOW = 1_700_000_000


@pytest.mark.parametrize(("secret", "stamp", "body", "signature", "valid"), [
    (SECRET, str(NOW), BODY, sign(SECRET, NOW, BODY), True),
    (SECRET, NOW, BODY, sign(SECRET, NOW, BODY), True),  # an int timestamp
    (Secret(SECRET), str(NOW), BODY, sign(SECRET, NOW, BODY), True),
    (SECRET.encode(), str(NOW), BODY, sign(SECRET, NOW, BODY), True),
    (SECRET, str(NOW - 300), BODY, sign(SECRET, NOW - 300, BODY), True),  # at the tolerance
    (SECRET, str(NOW - 301), BODY, sign(SECRET, NOW - 301, BODY), False),  # a replay
    (SECRET, str(NOW + 301), BODY, sign(SECRET, NOW + 301, BODY), False),  # from the future
    ("other", str(NOW), BODY, sign(SECRET, NOW, BODY), False),
    (SECRET, str(NOW), BODY + b" ", sign(SECRET, NOW, BODY), False),  # a changed body
    (SECRET, str(NOW + 1), BODY, sign(SECRET, NOW, BODY), False),  # a changed timestamp
    (SECRET, str(NOW), BODY, sign(SECRET, NOW, BODY).upper(), False),
    (SECRET, str(NOW), BODY, sign(SECRET, NOW, BODY)[7:], False),  # no "sha256="
    (SECRET, str(NOW), BODY, "sha1=" + sign(SECRET, NOW, BODY)[7:], False),
    (SECRET, str(NOW), BODY, "", False),
    (SECRET, str(NOW), BODY, None, False),
    (SECRET, str(NOW), BODY, "sha256=é\udc80", False),
    (SECRET, None, BODY, sign(SECRET, NOW, BODY), False),
    (SECRET, "", BODY, sign(SECRET, "", BODY), False),
    (SECRET, f"{NOW}.0", BODY, sign(SECRET, f"{NOW}.0", BODY), False),
    (SECRET, f" {NOW}", BODY, sign(SECRET, f" {NOW}", BODY), False),
    (SECRET, "-5", BODY, sign(SECRET, "-5", BODY), False),
    (SECRET, "１７", BODY, sign(SECRET, "１７", BODY), False),  # non-ASCII digits
])  # fmt: skip
def test_verify_signature(secret, stamp, body, signature, valid):
    assert verify_signature(secret, stamp, body, signature, now=NOW) is valid


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY) == "sha256=" + expected


# ---- configuration ----------------------------------------------------------------------

CONFIG = """
[[tools.webhook]]
name = "lookup_order"
description = "Status of an order"
url = "https://hooks.example.com/order"
secret = "ORDER_HOOK_SECRET"
timeout_ms = 5000
[tools.webhook.parameters]
type = "object"
required = ["order_id"]
[tools.webhook.parameters.properties.order_id]
type = "string"

[[tools.webhook]]
name = "cancel_order"
description = "Cancel an order"
url = "http://127.0.0.1:9000/cancel"
secret = "CANCEL_HOOK_SECRET"
parameters = '{"type": "object", "properties": {"reason": {"enum": ["late", null]}}}'
"""
ENV = {"ORDER_HOOK_SECRET": SECRET, "CANCEL_HOOK_SECRET": "cancel-" + SECRET}


def write(tmp_path, text: str):
    path = tmp_path / "tools.toml"
    path.write_text(text)
    return path


def test_load_webhooks_reads_every_table(tmp_path):
    order, cancel = load_webhooks(write(tmp_path, CONFIG), ENV)
    assert order.spec == ToolSpec("lookup_order", "Status of an order",
                                  {"type": "object", "required": ["order_id"],
                                   "properties": {"order_id": {"type": "string"}}},
                                  5.0, SERVER_OWNER)
    assert (order.url, order.secret.reveal(), order.secret_env) == (
        "https://hooks.example.com/order", SECRET, "ORDER_HOOK_SECRET")
    assert cancel.spec.timeout_s == 10.0
    assert cancel.spec.parameters["properties"]["reason"]["enum"] == ["late", None]
    assert SECRET not in repr(order) + str(order)


def test_no_webhooks_is_an_empty_list(tmp_path):
    assert load_webhooks(write(tmp_path, "[providers]\nstt_chain = 'local'\n"), {}) == []


def entry(**changes) -> str:
    fields = {"name": "'t'", "description": "'d'", "url": "'https://h.example/x'",
              "secret": "'ORDER_HOOK_SECRET'", "parameters": "'{\"type\": \"object\"}'"}
    fields.update(changes)
    return "[[tools.webhook]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items() if v)


@pytest.mark.parametrize(("text", "reason"), [
    (entry(colour="'red'"), "unknown fields ['colour']"),
    (entry(url=None), "missing fields ['url']"),
    (entry(url="'ftp://h.example/x'"), "http or https"),
    (entry(url="'/relative'"), "http or https"),
    (entry(secret="'MISSING_VAR'"), "environment variable"),
    (entry(secret="'" + SECRET + "'"), "environment variable"),
    (entry(timeout_ms="30001"), "timeout"),
    (entry(timeout_ms="true"), "timeout_ms must be an integer"),
    (entry(name="'bad name'"), "tool name"),
    (entry(parameters="'{\"type\": \"array\"}'"), '"type": "object"'),
    (entry(parameters="'not json'"), "must be JSON"),
    (entry(parameters="'{\"type\": \"object\", \"$ref\": \"https://e.example\"}'"), "local $refs"),
    (entry() + entry(), "named more than once: ['t']"),
    ("[tools]\nwebhook = 3\n", "array of tables"),
])  # fmt: skip
def test_load_webhooks_refuses_bad_tables(tmp_path, text, reason):
    with pytest.raises(ValueError) as caught:
        load_webhooks(write(tmp_path, text), ENV)
    assert reason in str(caught.value)
    assert SECRET not in str(caught.value)
