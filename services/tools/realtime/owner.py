"""Realtime assistant sessions: the claim endpoint and the sessions this worker owns.

The edge claims an assistant session whose engine is "realtime" on
`parley.realtime.claim` (a micro endpoint, so a queue group) exactly as it claims an STT
owner: the owner answers `SttClaimed`, renews `SttLease` every lease_s/3 and takes the
session's audio, control messages and tool answers (services/tools/realtime/session.py).
A claim opens the upstream session first, so a refused key or an unreachable vendor is
the claim's error (`503`, "provider_unavailable: …"), never a half-made session.
"""

from __future__ import annotations

import asyncio
import uuid

from nats.micro.service import EndpointConfig, Request, Service

from services.tools.realtime.session import RealtimeSession, build_registry, session_config
from services.tools.realtime.upstream import RealtimeUpstream
from services.tools.registry import ToolRegistry
from shared.errors import ProviderError, ProviderUnavailable
from shared.messages import Assistant, SttClaim, SttClaimed, decode, encode
from shared.worker import Runtime


class RealtimeSessions:
    """The realtime sessions this worker owns; a second claim of one refreshes its config."""

    def __init__(self, runtime: Runtime, worker_id: str) -> None:
        self.runtime, self.worker_id = runtime, worker_id
        self.by_sid: dict[str, RealtimeSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _upstream(self, assistant: Assistant, registry: ToolRegistry) -> RealtimeUpstream:
        providers = self.runtime.settings.providers
        if not providers.openai_api_key:
            raise ProviderUnavailable("OPENAI_API_KEY is not set: no realtime engine")
        return RealtimeUpstream(providers.openai_api_key, providers.openai_base_url,
                                session_config(assistant, registry), model=providers.realtime_model,
                                timeout_s=providers.timeout_s)

    async def claim(self, claim: SttClaim) -> SttClaimed:
        async with self._locks.setdefault(claim.sid, asyncio.Lock()):
            session = self.by_sid.get(claim.sid)
            if session is None:
                upstream = self._upstream(claim.assistant, build_registry(claim.sid, claim.assistant))
                await upstream.start()
                session = RealtimeSession(self.runtime, claim, self.worker_id, upstream, self.release)
                await session.start()
                self.by_sid[claim.sid] = session
        return SttClaimed(claim.sid, self.worker_id, self.runtime.settings.stt_lease_s)

    async def release(self, sid: str) -> None:
        session = self.by_sid.pop(sid, None)
        self._locks.pop(sid, None)
        if session:
            await session.close()

    async def close_all(self) -> None:
        for sid in list(self.by_sid):
            await self.release(sid)


async def add_realtime_endpoint(service: Service, runtime: Runtime) -> None:
    """Serve `parley.realtime.claim` on this worker's micro service."""
    sessions = RealtimeSessions(runtime, f"realtime-{uuid.uuid4().hex[:8]}")
    inflight: set[asyncio.Task] = set()

    async def claim(request: Request) -> None:
        try:
            message = decode(request.data)
            if not isinstance(message, SttClaim) or message.assistant is None \
                    or message.assistant.engine != "realtime":
                raise ValueError("not a claim of a realtime assistant session")
        except ValueError as exc:
            await request.respond_error("400", str(exc)[:200])
            return
        try:
            claimed = await sessions.claim(message)
        except ProviderError as exc:  # our messages: no key, no vendor text
            await request.respond_error("503", f"{exc.code}: {exc}"[:200])
            return
        await request.respond(encode(claimed))

    async def on_claim(request: Request) -> None:
        # Opening the upstream takes a round trip or more: other claims must not queue.
        task = asyncio.create_task(claim(request))
        inflight.add(task)
        task.add_done_callback(inflight.discard)

    await service.add_endpoint(EndpointConfig(name="realtime-claim",
                                              subject=runtime.subjects.realtime_claim,
                                              handler=on_claim))
    runtime.closers.append(sessions.close_all)
