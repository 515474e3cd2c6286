"""Conversation history (services/tools/llm/history.py): real Redis, memory, Redis dying."""

from __future__ import annotations

import json
import uuid

import pytest
import redis.asyncio as aioredis

from services.tools.llm.history import ConversationStore, window
from services.tools.llm.provider import (
    ToolCallRequest,
    assistant_message,
    tool_result_message,
    user_message,
)
from tests.support.servers import start_redis


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> str:
    return f"h{uuid.uuid4().hex[:8]}"


def tool_turn(n: int, calls: int = 2) -> list[dict]:
    """A user message, a model turn that calls `calls` tools, their results, an answer."""
    requests = [ToolCallRequest(f"c{n}-{i}", "lookup", json.dumps({"i": i}))
                for i in range(calls)]
    return [user_message(f"question {n}"), assistant_message("", requests),
            *[tool_result_message(r.call_id, {"n": n}) for r in requests],
            assistant_message(f"answer {n}")]


def roles(messages: list[dict]) -> list[str]:
    return [m["role"] for m in messages]


def starts_whole(messages: list[dict]) -> bool:
    """No tool result without the assistant message that asked for it."""
    asked: set[str] = set()
    for m in messages:
        asked |= {c["id"] for c in m.get("tool_calls", [])}
        if m["role"] == "tool" and m["tool_call_id"] not in asked:
            return False
    return True


# ---- the window (pure) --------------------------------------------------------------------


@pytest.mark.parametrize("max_messages", range(2, 14))
def test_the_window_never_parts_calls_from_results(max_messages):
    conversation = tool_turn(1) + tool_turn(2, calls=3) + tool_turn(3)
    shown = window(conversation, max_messages)
    assert len(shown) <= max_messages
    assert shown == conversation[len(conversation) - len(shown):]  # a suffix
    assert starts_whole(shown)
    if any(m["role"] == "user" for m in conversation[-max_messages:]):
        assert shown[0]["role"] == "user"


def test_a_window_without_a_user_message_starts_at_a_model_turn():
    turn = tool_turn(1, calls=6)  # user, assistant+calls, 6 results, answer: 9 messages
    assert window(turn, 8) == turn[1:]  # the calls' group fits whole
    assert window(turn, 7) == [assistant_message("answer 1")]  # it does not
    assert window([tool_result_message("c", 1)], 5) == []


# ---- with Redis -----------------------------------------------------------------------------


async def test_history_round_trips_and_is_shared_between_workers(redis_server, prefix):
    one = ConversationStore(redis_server.url, prefix=prefix)
    two = ConversationStore(redis_server.url, prefix=prefix)  # another tools worker
    messages = tool_turn(1) + [user_message("¿Qué tal? 🙂")]
    await one.append("s1", *messages[:3])
    await two.append("s1", *messages[3:])
    assert await one.load("s1") == messages
    assert await two.load("s1") == messages
    assert await one.load("other") == []
    assert not one.degraded
    await one.close()
    await two.close()


async def test_redis_holds_a_bounded_list_with_an_expiry(redis_server, prefix):
    store = ConversationStore(redis_server.url, prefix=prefix, max_messages=6, ttl_s=120)
    for n in range(4):
        await store.append("s", *tool_turn(n))
    raw = aioredis.from_url(redis_server.url)
    key = store.key("s")
    assert key == f"{prefix}:conv:s"
    assert await raw.llen(key) == 6
    assert 0 < await raw.ttl(key) <= 120
    loaded = await store.load("s")
    assert roles(loaded) == ["user", "assistant", "tool", "tool", "assistant"]
    assert loaded[0]["content"] == "question 3" and starts_whole(loaded)
    await store.clear("s")
    assert await raw.exists(key) == 0 and await store.load("s") == []
    await raw.aclose()
    await store.close()


async def test_a_cut_inside_a_tool_group_is_dropped_on_load(redis_server, prefix):
    store = ConversationStore(redis_server.url, prefix=prefix, max_messages=7)
    first, second = tool_turn(1), tool_turn(2, calls=3)  # 5 and 6 messages
    await store.append("s", *first, *second)
    assert await store.load("s") == second  # Redis kept "answer 1" too: not a turn's start
    await store.append("s", user_message("three"))
    assert await store.load("s") == second + [user_message("three")]
    await store.append("s", assistant_message("ok"))  # Redis's list now starts mid-group
    assert await store.load("s") == [user_message("three"), assistant_message("ok")]
    await store.close()


async def test_items_that_are_not_messages_are_skipped(redis_server, prefix):
    store = ConversationStore(redis_server.url, prefix=prefix)
    raw = aioredis.from_url(redis_server.url)
    await raw.rpush(store.key("s"), b"not json", b"[1]", json.dumps(user_message("hi")))
    assert await store.load("s") == [user_message("hi")]
    await raw.aclose()
    await store.close()


# ---- without Redis --------------------------------------------------------------------------


async def test_memory_only_without_redis():
    clock = Clock()
    store = ConversationStore(None, max_messages=5, ttl_s=10, clock=clock)
    await store.append("s", *tool_turn(1))
    await store.append("s", user_message("next"))
    assert await store.load("s") == [user_message("next")]  # turn 1 no longer fits whole
    assert not store.degraded
    clock.now = 9.9
    assert await store.load("s") == [user_message("next")]
    clock.now = 20  # ten seconds after the last append
    assert await store.load("s") == []
    await store.append("t", user_message("x"))
    await store.clear("t")
    assert await store.load("t") == []
    await store.append("nothing")  # no messages: nothing happens
    assert await store.load("nothing") == []


async def test_an_unreachable_redis_is_memory():
    dead = start_redis()
    dead.stop()
    store = ConversationStore(dead.url)
    await store.append("s", user_message("hello"))  # no exception
    assert store.degraded
    assert await store.load("s") == [user_message("hello")]
    await store.close()


async def test_redis_dying_and_coming_back(prefix):
    clock = Clock()
    server = start_redis()
    store = ConversationStore(server.url, prefix=prefix, redis_retry_s=5, clock=clock)
    before, during = tool_turn(1), tool_turn(2)
    await store.append("s", *before)
    server.stop()
    assert await store.load("s") == before  # from memory; no exception
    assert store.degraded
    await store.append("s", *during[:2])
    await store.append("s", *during[2:])
    assert await store.load("s") == before + during
    restarted = start_redis(server.port)
    try:
        clock.now += 5  # Redis is tried again; what it missed goes first
        await store.append("s", user_message("after"))
        assert not store.degraded
        other = ConversationStore(restarted.url, prefix=prefix)
        assert await other.load("s") == during + [user_message("after")]  # a fresh Redis
        await other.append("s", user_message("from another worker"))
        assert (await store.load("s"))[-1] == user_message("from another worker")
        await other.close()
    finally:
        await store.close()
        restarted.stop()


async def test_a_clear_while_redis_is_down_reaches_it_later(prefix):
    clock = Clock()
    server = start_redis()
    store = ConversationStore(server.url, prefix=prefix, redis_retry_s=5, clock=clock)
    await store.append("s", *tool_turn(1))
    server.stop()
    await store.clear("s")  # Redis down: memory forgets now
    await store.append("s", user_message("fresh start"))
    restarted = start_redis(server.port)
    raw = aioredis.from_url(restarted.url)
    try:
        await raw.rpush(store.key("s"), json.dumps(user_message("stale")))  # as if persisted
        clock.now += 5
        assert await store.load("s") == [user_message("fresh start")]
        assert await raw.lrange(store.key("s"), 0, -1) == [
            json.dumps(user_message("fresh start"), separators=(",", ":")).encode()]
    finally:
        await raw.aclose()
        await store.close()
        restarted.stop()


def test_settings_are_validated():
    with pytest.raises(ValueError):
        ConversationStore(None, max_messages=1)
    with pytest.raises(ValueError):
        ConversationStore(None, ttl_s=0)
