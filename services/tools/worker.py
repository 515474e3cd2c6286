"""Tools worker: joins the system and consumes `parley.work.tools`.

Assistant mode is not wired yet (docs/ARCHITECTURE.md, "Assistant mode — planned
design"): nothing publishes tool work today, so an item that arrives is logged and dropped
rather than left to be redelivered for ever.
"""

from __future__ import annotations

import asyncio
import logging

from shared.config import Settings
from shared.messages import Capabilities
from shared.worker import Runtime, consume_work, run_worker

log = logging.getLogger("parley.tools")


async def main(settings: Settings) -> None:
    caps = Capabilities(kind="tools")

    async def start(runtime: Runtime) -> None:
        async def handle(work, msg) -> None:
            log.warning("dropping %s work: assistant mode is not available yet", type(work).__name__)

        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "tools", handle, 4)))

    await run_worker("tools", settings, caps, start)
