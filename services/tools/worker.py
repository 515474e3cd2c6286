"""Tools worker: runs assistant turns from `parley.work.tools` (services/tools/runner.py),
and owns the audio of speech-to-speech sessions on `parley.realtime.claim` (realtime/).

Server-side tools (signed webhooks) come from the `[[tools.webhook]]` tables of the
`PARLEY_CONFIG` file; conversation history lives in Redis when configured, else here.
"""

from __future__ import annotations

import asyncio
import logging

from services.tools.llm import engines
from services.tools.llm.history import ConversationStore
from services.tools.realtime.owner import add_realtime_endpoint
from services.tools.runner import Deps, TurnRunner
from services.tools.webhooks import configured_webhooks
from shared.config import Settings
from shared.http_clients import HttpClients
from shared.messages import Capabilities, SessionEnd, decode
from shared.worker import Runtime, consume_work, run_worker

log = logging.getLogger("parley.tools")

CONCURRENCY = 64  # turns mostly wait (model, client, speech): many fit in one worker


async def forget_ended_sessions(runtime: Runtime, conversations: ConversationStore) -> None:
    """A session that ended drops its conversation now, not when its TTL runs out; one
    tools worker (a queue group) does it for each session."""

    async def on_ctl(msg) -> None:
        try:
            control = decode(msg.data)
        except ValueError:
            return
        if isinstance(control, SessionEnd):
            await conversations.clear(control.sid)

    await runtime.nc.subscribe(runtime.subjects.ctl_wildcard, queue="tools-history", cb=on_ctl)


async def main(settings: Settings) -> None:
    http = HttpClients(settings.providers.timeout_s)
    llm = engines.build(settings, http)
    webhooks = configured_webhooks()
    realtime = ("realtime",) if settings.providers.openai_api_key else ()
    caps = Capabilities(kind="tools", engines=("pipeline", *realtime))

    async def start(runtime: Runtime) -> None:
        conversations = ConversationStore(settings.redis_url, prefix=settings.prefix)
        deps = Deps(runtime, llm, conversations, webhooks, http.get("webhooks"))
        runtime.tasks.append(asyncio.create_task(consume_work(runtime, "tools", TurnRunner(deps), CONCURRENCY)))
        await forget_ended_sessions(runtime, conversations)
        runtime.closers += [llm.close, conversations.close, http.aclose]

    await run_worker("tools", settings, caps, start, add_realtime_endpoint)
