"""The edge's door: who connects (auth) and how much they may do (rate limits).

Where each check happens (documented in docs/PROTOCOL-NOTES.md):
- the handshake: credentials (`authenticate`), refused with HTTP 401 and no upgrade;
- right after the upgrade: the principal's new-connection rate (`admit_connection`),
  refused with a fatal `rate_limited` error and close 4429;
- `session.start` / `session.resume`: a session slot for the principal and for the whole
  system (`take_slot`), refused the same way; the slot is a renewed lease, released when
  the connection ends, however it ends;
- every client message in a session (`SessionQuota.admit`): messages per second and
  audio seconds per minute; the excess is dropped with a non-fatal `rate_limited` error
  (at most one a second).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter
from websockets.exceptions import ConnectionClosed

from services.edge import wire
from services.edge.auth import ANONYMOUS_NAME, AuthConfig, AuthError, Principal, authenticate, token_from
from services.edge.ratelimit import OK, BucketRequest, MemoryLimiter, Scope
from services.edge.ratelimit_redis import FallbackLimiter

log = logging.getLogger("parley.edge.access")

AUTH_REFUSED = Counter("parley_auth_refused_total", "Handshakes refused for bad or missing credentials")
RATE_LIMITED = Counter("parley_rate_limited_total", "Requests refused by a rate limit", ["limit"])

LEASE_TTL_S = 60.0  # a crashed edge's sessions stop counting after this long
TELL_EVERY_S = 1.0  # a flood gets one rate_limited error a second, not one per message
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CLOSE_UNAUTHORIZED, CLOSE_RATE_LIMITED = 4401, 4429


@dataclass
class Slot:
    """A live session's place in its principal's and the system's session counts."""

    member: str
    owner: str
    scopes: tuple[Scope, ...]
    in_redis: bool
    renewer: asyncio.Task | None = None


class Access:
    def __init__(self, config: AuthConfig, limiter: FallbackLimiter, prefix: str = "parley",
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.limiter, self._prefix, self._clock = config, limiter, prefix, clock
        self._principals: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def disabled(cls) -> "Access":
        return cls(AuthConfig(), FallbackLimiter(None, MemoryLimiter(time.monotonic)))

    def key(self, principal: Principal, what: str) -> str:
        return f"{self._prefix}:rl:p:{principal.name}:{what}"

    # -- the handshake ---------------------------------------------------------------------
    def authenticate(self, connection: object, headers: Mapping[str, str], path: str) -> bool:
        """Check the handshake's credentials; remember the principal for `principal_of`."""
        try:
            principal = authenticate(self.config, token_from(headers, path), self._clock())
        except AuthError as exc:
            AUTH_REFUSED.inc()
            log.info("handshake refused: %s", exc)  # the reason only, never the token
            return False
        self._principals[connection] = principal
        return True

    def principal_of(self, connection: object) -> Principal | None:
        """The principal `authenticate` found for this connection (taken once); None when
        auth is on and it found none, which the handshake should have made impossible."""
        principal = self._principals.pop(connection, None)
        if principal is None and not self.config.enabled:
            principal = self.config.principal(ANONYMOUS_NAME)
        return principal

    # -- connections and sessions ----------------------------------------------------------
    async def admit_connection(self, principal: Principal) -> str | None:
        """None, or why the principal may not open another connection now."""
        per_minute = principal.limits.connections_per_minute
        if not per_minute:
            return None
        request = BucketRequest(self.key(principal, "conn"), per_minute / 60.0, per_minute, 1.0)
        if await self.limiter.take([request]) == OK:
            return None
        RATE_LIMITED.labels("connections_per_minute").inc()
        return f"more than {per_minute:g} new connections a minute"

    async def take_slot(self, principal: Principal, sid: str) -> tuple[Slot | None, str | None]:
        """(slot, None), or (None, why) when the principal or the system has no room."""
        scopes = []
        if principal.limits.max_sessions:
            scopes.append(Scope(self.key(principal, "sessions"), principal.limits.max_sessions))
        if self.config.global_max_sessions:
            scopes.append(Scope(f"{self._prefix}:rl:global:sessions", self.config.global_max_sessions))
        if not scopes:
            return None, None
        owner = uuid.uuid4().hex  # this connection: a resume elsewhere takes the slot over
        refused, in_redis = await self.limiter.acquire(sid, owner, scopes, LEASE_TTL_S)
        if refused != OK:
            per_principal = scopes[refused].key != f"{self._prefix}:rl:global:sessions"
            RATE_LIMITED.labels("max_sessions" if per_principal else "global_max_sessions").inc()
            return None, ("too many concurrent sessions for this principal" if per_principal
                          else "too many concurrent sessions on this service")
        slot = Slot(sid, owner, tuple(scopes), in_redis)
        slot.renewer = asyncio.create_task(self._renew(slot))
        return slot, None

    async def _renew(self, slot: Slot) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            try:
                await self.limiter.renew(slot.member, slot.owner, slot.scopes, LEASE_TTL_S, slot.in_redis)
            except Exception:  # never let a renewal end a session; the lease lapses by itself
                log.exception("could not renew the session slot of %s", slot.member)

    async def release(self, slot: Slot | None) -> None:
        if slot is None:
            return
        if slot.renewer is not None:
            slot.renewer.cancel()
        try:
            await self.limiter.release(slot.member, slot.owner, slot.scopes, slot.in_redis)
        except Exception:
            log.exception("could not release the session slot of %s (it expires by itself)", slot.member)

    def quota(self, principal: Principal) -> "SessionQuota":
        return SessionQuota(self, principal)

    def describe(self, host: str) -> list[tuple[int, str]]:
        """What to log at start-up: (level, message)."""
        c = self.config
        lines: list[tuple[int, str]] = []
        if c.enabled:
            kinds = [f"{len(c.api_keys)} API keys"] if c.api_keys else []
            if c.jwt.hs256_secret:
                kinds.append("JWT HS256")
            if c.jwt.rsa_keys:
                kinds.append(f"JWT RS256 ({len(c.jwt.rsa_keys)} keys)")
            lines.append((logging.INFO, "auth is enabled: " + ", ".join(kinds)))
        else:
            lines.append((logging.INFO, "auth is disabled: any token or none is accepted"))
            if host not in LOOPBACK:
                lines.append((logging.WARNING, f"AUTH IS DISABLED AND THE EDGE LISTENS ON {host}: "
                                               "anyone who can reach it can use it"))
        d = c.default_limits
        lines.append((logging.INFO, f"rate limits (0 = none): per principal {d.max_sessions} sessions, "
                                    f"{d.connections_per_minute:g} connections/min, "
                                    f"{d.audio_seconds_per_minute:g} audio s/min, "
                                    f"{d.messages_per_second:g} messages/s; "
                                    f"{c.global_max_sessions} sessions in all"))
        return lines


async def refuse_rate_limited(socket, message: str) -> None:
    """A connection refused after the upgrade: a fatal `rate_limited` error, close 4429."""
    event = {"type": "error", "code": "rate_limited", "message": message, "fatal": True}
    try:
        await socket.send(wire.encode_event(event))
        await socket.close(CLOSE_RATE_LIMITED, "rate_limited")
    except ConnectionClosed:
        pass


class SessionQuota:
    """Messages per second and audio seconds per minute of one session's principal."""

    def __init__(self, access: Access, principal: Principal) -> None:
        self._access, self._principal = access, principal
        self._next_tell = 0.0

    async def admit(self, command: object, sample_rate: int,
                    tell: Callable[[str, str], Awaitable[None]]) -> bool:
        """True: handle the command. False: drop it (the client was told, at most once a second)."""
        limits = self._principal.limits
        if isinstance(command, wire.SessionEnd) or not (limits.messages_per_second or limits.audio_seconds_per_minute):
            return True  # ending is always allowed: it frees what the limits protect
        requests, names = [], []
        if limits.messages_per_second:
            rate = limits.messages_per_second
            requests.append(BucketRequest(self._access.key(self._principal, "msg"), rate, rate, 1.0))
            names.append("messages_per_second")
        if limits.audio_seconds_per_minute and isinstance(command, wire.AudioAppend):
            per_minute = limits.audio_seconds_per_minute
            seconds = len(command.pcm) / 2 / sample_rate
            requests.append(BucketRequest(self._access.key(self._principal, "audio"),
                                          per_minute / 60.0, per_minute, seconds))
            names.append("audio_seconds_per_minute")
        if not requests:
            return True
        refused = await self._access.limiter.take(requests)
        if refused == OK:
            return True
        RATE_LIMITED.labels(names[refused]).inc()
        now = time.monotonic()
        if now >= self._next_tell:
            self._next_tell = now + TELL_EVERY_S
            what = names[refused].replace("_", " ")
            await tell("rate_limited", f"over the limit of {what}; the excess is dropped")
        return False
