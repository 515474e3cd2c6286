"""Tools worker: joins the system and consumes `parley.work.tools`.

Assistant mode (client-registered tools, webhooks) is not built yet; until it is, every
tool work item is answered with a `tool_error` event so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import logging

from shared import bus
from shared.config import Settings
from shared.messages import Capabilities
from shared.worker import Runtime, consume_work, run_worker

log = logging.getLogger("parley.tools")


async def main(settings: Settings) -> None:
    caps = Capabilities(kind="tools")

    async def start(runtime: Runtime) -> None:
        async def handle(work, msg) -> None:
            sid = getattr(work, "sid", None)
            log.warning("tool work received but assistant mode is not available yet")
            if sid:
                event = {"type": "warning", "code": "tool_error", "message": "tools are not available yet"}
                await bus.publish_event(runtime.js, runtime.subjects, sid, event)

        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "tools", handle, 4)))

    await run_worker("tools", settings, caps, start)
