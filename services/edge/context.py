"""What every session on one edge process shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.js import JetStreamContext

from services.edge import wire
from services.edge.access import Access
from services.edge.capabilities import CapabilityCache
from services.edge.chunker import Chunker
from services.tools.registry import ToolSpec
from services.tools.webhooks import configured_webhooks
from shared.config import Settings
from shared.state import FallbackStore, SessionRecord
from shared.subjects import Subjects


@dataclass
class EdgeContext:
    settings: Settings
    subjects: Subjects
    nc: Client
    js: JetStreamContext
    store: FallbackStore
    capabilities: CapabilityCache
    live: dict = field(default_factory=dict)  # sid → Session on this edge
    expiries: set = field(default_factory=set)
    on_expire: Callable[[SessionRecord], Awaitable[None]] | None = None
    server_tools: list[ToolSpec] = field(default_factory=lambda: [t.spec for t in configured_webhooks()])
    access: Access = field(default_factory=Access.disabled)  # auth and rate limits

    @property
    def limits(self) -> wire.Limits:
        return wire.Limits(self.settings.max_text_frame_bytes, self.settings.max_frame_audio_s)

    def new_chunker(self, sample_rate: int) -> Chunker:
        s = self.settings
        return Chunker(
            sample_rate,
            chunk_ms=s.chunk_ms,
            threshold_rms=s.vad_rms,
            hangover_ms=s.vad_hangover_ms,
            preroll_ms=s.vad_preroll_ms,
        )

    def schedule_expiry(self, record: SessionRecord, generation: int) -> None:
        """End a detached session when its resume window passes without a resume (here or
        on any other edge: a resume bumps the generation)."""

        async def expire() -> None:
            await asyncio.sleep(self.settings.resume_window_s)
            if record.sid in self.live or await self.store.generation(record.sid) != generation:
                return
            if self.on_expire:
                await self.on_expire(record)

        task = asyncio.create_task(expire())
        self.expiries.add(task)
        task.add_done_callback(self.expiries.discard)
