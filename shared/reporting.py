"""What a worker tells clients about its providers: `usage` (with cost) and the
`warning`s that a fallback serves them or that the preferred provider is back."""

from __future__ import annotations

import logging
from dataclasses import asdict

from prometheus_client import Counter

from shared import bus
from shared.cost import CostLedger
from shared.fallback import FallbackNotices, Served
from shared.usage import Usage

log = logging.getLogger("parley.reporting")

COST_USD = Counter("parley_cost_usd_total", "Metered provider cost, US dollars", ["capability", "provider"])


class Reporter:
    def __init__(self, js, subjects, ledger: CostLedger) -> None:
        self.js = js
        self.subjects = subjects
        self.ledger = ledger
        self.notices = FallbackNotices()

    async def usage(self, speaker: str, principal: str, utterance_id: str, records: list[Usage], tag: str) -> None:
        """One `usage` event per provider call, to the speaker whose utterance caused it;
        totals per session and principal go to the ledger."""
        for index, usage in enumerate(records):
            cost = await self.ledger.add(speaker, principal, usage)
            COST_USD.labels(usage.capability, usage.provider).inc(cost)
            event = {"type": "usage", "utterance_id": utterance_id, **asdict(usage), "cost_usd": round(cost, 8)}
            await bus.publish_event(self.js, self.subjects, speaker, event,
                                    msg_id=f"{utterance_id}:usage:{tag}:{index}")

    async def served(self, served: Served | None, recipients, utterance_id: str) -> None:
        for sid in recipients:
            notice = self.notices.observe(sid, served)
            if notice is None:
                continue
            if notice == "fallback":
                message = f"{served.capability}: {served.preferred} is unavailable; {served.provider} serves you"
            else:
                message = f"{served.capability}: {served.provider} serves you again"
            event = {"type": "warning", "code": f"provider_{notice}", "message": message,
                     "capability": served.capability, "provider": served.provider}
            await bus.publish_event(self.js, self.subjects, sid, event,
                                    msg_id=f"{utterance_id}:{served.capability}:{notice}:{sid}")

    def forget(self, sid: str) -> None:
        self.notices.forget(sid)
