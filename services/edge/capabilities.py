"""What the running workers can do, and whether a new session can be served by them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.aio.client import Client

from shared.languages import supports_pair
from shared.messages import Capabilities, decode
from shared.subjects import WORKER_KINDS, Subjects

CACHE_S = 5.0


@dataclass(frozen=True)
class SystemCapabilities:
    stt: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    tts: frozenset[str]
    missing_kinds: tuple[str, ...]  # worker kinds that did not answer
    engines: frozenset[str] = frozenset()  # assistant engines the tools workers run


def admission_problems(
    caps: SystemCapabilities, language: str, target_language: str | None, room: str | None
) -> list[str]:
    """Why a translate session cannot be served; empty when it can.

    A room member is admitted even when its own speech cannot be recognised (it can still
    listen); `room_warnings` names what it will miss.
    """
    if room is not None:
        return [f"no {kind} worker is running" for kind in caps.missing_kinds]
    problems = [f"no {kind} worker is running" for kind in caps.missing_kinds]
    if language not in caps.stt:
        problems.append(f"no speech recognition for {language!r}")
    if target_language != language:
        if not supports_pair(caps.pairs, language, target_language):
            problems.append(f"no translation from {language!r} to {target_language!r}")
        if target_language not in caps.tts:
            problems.append(f"no speech synthesis for {target_language!r}")
    return problems


def assistant_problems(caps: SystemCapabilities, language: str, engine: str = "pipeline") -> list[str]:
    """Why an assistant session cannot be served; empty when it can."""
    problems = [f"no {kind} worker is running" for kind in caps.missing_kinds]
    if engine not in caps.engines and "tools" not in caps.missing_kinds:
        problems.append(f"the {engine!r} assistant engine is not available (realtime needs OPENAI_API_KEY)")
    if engine == "realtime":
        return problems  # speech in and out is the Realtime model's
    if language not in caps.stt:
        problems.append(f"no speech recognition for {language!r}")
    if language not in caps.tts:
        problems.append(f"no speech synthesis for {language!r}")
    return problems


def room_warnings(caps: SystemCapabilities, language: str, others: set[str]) -> list[str]:
    warnings = []
    if language not in caps.stt:
        warnings.append(f"no speech recognition for {language!r}: you can listen, not speak")
    for other in sorted(others - {language}):
        if not supports_pair(caps.pairs, other, language) or language not in caps.tts:
            warnings.append(f"speech in {other!r} cannot be rendered into {language!r}")
    return warnings


class CapabilityCache:
    """Asks every worker kind on `parley.caps.<kind>`; answers are cached a few seconds."""

    def __init__(self, nc: Client, subjects: Subjects, clock=time.monotonic) -> None:
        self._nc = nc
        self._subjects = subjects
        self._clock = clock
        self._cached: tuple[float, SystemCapabilities] | None = None

    async def _ask(self, kind: str) -> Capabilities | None:
        try:
            reply = await self._nc.request(self._subjects.caps(kind), b"", timeout=1.0)
            caps = decode(reply.data)
            return caps if isinstance(caps, Capabilities) else None
        except Exception:  # no responders, timeout, garbage: the kind is missing
            return None

    async def get(self, fresh: bool = False) -> SystemCapabilities:
        now = self._clock()
        if not fresh and self._cached and now - self._cached[0] < CACHE_S and not self._cached[1].missing_kinds:
            return self._cached[1]
        answers = dict(zip(WORKER_KINDS, await asyncio.gather(*(self._ask(k) for k in WORKER_KINDS))))
        caps = SystemCapabilities(
            stt=frozenset(answers["stt"].languages) if answers["stt"] else frozenset(),
            pairs=frozenset(answers["translate"].pairs) if answers["translate"] else frozenset(),
            tts=frozenset(answers["tts"].languages) if answers["tts"] else frozenset(),
            missing_kinds=tuple(k for k in WORKER_KINDS if answers[k] is None),
            engines=frozenset(answers["tools"].engines) if answers["tools"] else frozenset(),
        )
        self._cached = (now, caps)
        return caps
