"""Session and room state: Redis when configured and up, process memory otherwise.

With Redis any edge can resume any session and rooms span edges; in memory (the embedded
default, or Redis down) both are limited to one edge process, and the edge says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.messages import Listener

log = logging.getLogger("parley.state")


@dataclass(frozen=True)
class SessionRecord:
    sid: str
    token_hash: str
    mode: str
    language: str
    target_language: str | None
    room: str | None
    input_sample_rate: int
    output_sample_rate: int
    voice: str | None
    principal: str = "anonymous"
    created_at: float = 0.0
    instructions: str | None = None  # assistant mode
    tools: tuple[dict, ...] = ()  # assistant mode: the client's registered tools, as sent
    engine: str = "pipeline"  # assistant mode: "pipeline" or "realtime"

    @property
    def room_key(self) -> str | None:
        """The room as state and the bus know it: a room belongs to its principal, so two
        principals' "lobby" are two rooms and neither hears the other (a subject token)."""
        if self.room is None:
            return None
        return f"{hashlib.sha256(self.principal.encode()).hexdigest()[:16]}-{self.room}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "SessionRecord":
        fields = json.loads(raw)
        fields["tools"] = tuple(fields.get("tools", ()))
        return cls(**fields)


class Store(Protocol):
    async def save_session(self, record: SessionRecord, ttl_s: float) -> None: ...
    async def load_session(self, sid: str) -> SessionRecord | None: ...
    async def delete_session(self, sid: str) -> None: ...
    async def join_room(self, room: str, member: Listener) -> None: ...
    async def leave_room(self, room: str, sid: str) -> None: ...
    async def room_members(self, room: str) -> list[Listener]: ...
    async def next_generation(self, sid: str) -> int: ...
    async def generation(self, sid: str) -> int: ...


DEFAULT_MEMBER_TTL_S = 180.0


class MemoryStore:
    def __init__(self, clock=time.monotonic, member_ttl_s: float = DEFAULT_MEMBER_TTL_S) -> None:
        self._clock = clock
        self._member_ttl_s = member_ttl_s
        self._sessions: dict[str, tuple[SessionRecord, float]] = {}
        self._rooms: dict[str, dict[str, tuple[Listener, float]]] = {}
        self._generations: dict[str, int] = {}

    async def save_session(self, record: SessionRecord, ttl_s: float) -> None:
        self._sessions[record.sid] = (record, self._clock() + ttl_s)

    async def load_session(self, sid: str) -> SessionRecord | None:
        record, expires = self._sessions.get(sid, (None, 0.0))
        if record is None or expires < self._clock():
            self._sessions.pop(sid, None)
            return None
        return record

    async def delete_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)
        self._generations.pop(sid, None)

    async def next_generation(self, sid: str) -> int:
        self._generations[sid] = self._generations.get(sid, 0) + 1
        return self._generations[sid]

    async def generation(self, sid: str) -> int:
        return self._generations.get(sid, 0)

    async def join_room(self, room: str, member: Listener) -> None:
        """Join, or renew membership: a member not renewed within the TTL has gone."""
        self._rooms.setdefault(room, {})[member.sid] = (member, self._clock())

    async def leave_room(self, room: str, sid: str) -> None:
        members = self._rooms.get(room, {})
        members.pop(sid, None)
        if not members:
            self._rooms.pop(room, None)

    async def room_members(self, room: str) -> list[Listener]:
        oldest = self._clock() - self._member_ttl_s
        members = self._rooms.get(room, {})
        for sid in [sid for sid, (_, seen) in members.items() if seen < oldest]:
            del members[sid]
        return sorted((m for m, _ in members.values()), key=lambda m: m.sid)


class RedisStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "parley",
                 member_ttl_s: float = DEFAULT_MEMBER_TTL_S, clock=time.time) -> None:
        self._r = client
        self._prefix = prefix
        self._member_ttl_s = member_ttl_s
        self._clock = clock  # wall time: members are renewed by many edges

    def _session_key(self, sid: str) -> str:
        return f"{self._prefix}:session:{sid}"

    def _room_key(self, room: str) -> str:
        return f"{self._prefix}:room:{room}"

    async def save_session(self, record: SessionRecord, ttl_s: float) -> None:
        await self._r.set(self._session_key(record.sid), record.to_json(), px=int(ttl_s * 1000))

    async def load_session(self, sid: str) -> SessionRecord | None:
        raw = await self._r.get(self._session_key(sid))
        return SessionRecord.from_json(raw) if raw else None

    async def delete_session(self, sid: str) -> None:
        await self._r.delete(self._session_key(sid), self._session_key(sid) + ":gen")

    async def next_generation(self, sid: str) -> int:
        key = self._session_key(sid) + ":gen"
        generation = await self._r.incr(key)
        await self._r.expire(key, 48 * 3600)
        return int(generation)

    async def generation(self, sid: str) -> int:
        return int(await self._r.get(self._session_key(sid) + ":gen") or 0)

    async def join_room(self, room: str, member: Listener) -> None:
        entry = {**asdict(member), "seen": self._clock()}
        await self._r.hset(self._room_key(room), member.sid, json.dumps(entry))
        await self._r.expire(self._room_key(room), int(self._member_ttl_s * 2))

    async def leave_room(self, room: str, sid: str) -> None:
        await self._r.hdel(self._room_key(room), sid)

    async def room_members(self, room: str) -> list[Listener]:
        """Members renewed within the TTL; the others (an edge that died) are dropped."""
        raw = await self._r.hgetall(self._room_key(room))
        oldest, members, gone = self._clock() - self._member_ttl_s, [], []
        for sid, value in raw.items():
            entry = json.loads(value)
            if entry.pop("seen", oldest) < oldest:
                gone.append(sid)
            else:
                members.append(Listener(**entry))
        if gone:
            await self._r.hdel(self._room_key(room), *gone)
        return sorted(members, key=lambda m: m.sid)


class FallbackStore:
    """Redis first; on a Redis error, process memory, and `degraded` turns true until Redis
    answers again. Callers read `degraded` to warn their clients."""

    def __init__(self, primary: RedisStore | None, fallback: MemoryStore | None = None) -> None:
        self._primary = primary
        self._fallback = fallback or MemoryStore()
        self.degraded = primary is None

    async def _call(self, name: str, *args):
        if self._primary is not None:
            try:
                result = await getattr(self._primary, name)(*args)
                if self.degraded:
                    log.info("redis is back; session state is shared again")
                self.degraded = False
                return result
            except (RedisError, OSError) as exc:
                if not self.degraded:
                    log.warning("redis unavailable (%s); session state falls back to memory", exc)
                self.degraded = True
        return await getattr(self._fallback, name)(*args)

    async def save_session(self, record: SessionRecord, ttl_s: float) -> None:
        await self._call("save_session", record, ttl_s)

    async def load_session(self, sid: str) -> SessionRecord | None:
        return await self._call("load_session", sid)

    async def delete_session(self, sid: str) -> None:
        await self._call("delete_session", sid)

    async def join_room(self, room: str, member: Listener) -> None:
        await self._call("join_room", room, member)

    async def leave_room(self, room: str, sid: str) -> None:
        await self._call("leave_room", room, sid)

    async def room_members(self, room: str) -> list[Listener]:
        return await self._call("room_members", room)

    async def next_generation(self, sid: str) -> int:
        return await self._call("next_generation", sid)

    async def generation(self, sid: str) -> int:
        return await self._call("generation", sid)


def open_store(redis_url: str | None, prefix: str = "parley",
               member_ttl_s: float = DEFAULT_MEMBER_TTL_S) -> FallbackStore:
    memory = MemoryStore(member_ttl_s=member_ttl_s)
    if not redis_url:
        return FallbackStore(None, memory)
    client = aioredis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return FallbackStore(RedisStore(client, prefix, member_ttl_s), memory)
