"""Every NATS subject and JetStream name, built in this one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

WORKER_KINDS = ("stt", "translate", "tts", "tools")


def token(value: str) -> str:
    """A subject token; session ids and room names are checked before they reach a subject."""
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


@dataclass(frozen=True)
class Subjects:
    prefix: str = "parley"

    def audio(self, sid: str) -> str:
        return f"{self.prefix}.audio.{token(sid)}"

    @property
    def stt_claim(self) -> str:
        return f"{self.prefix}.stt.claim"

    def stt_lease(self, sid: str) -> str:
        return f"{self.prefix}.stt.lease.{token(sid)}"

    def work(self, kind: str) -> str:
        return f"{self.prefix}.work.{token(kind)}"

    def out(self, sid: str) -> str:
        return f"{self.prefix}.out.{token(sid)}"

    def ctl(self, sid: str) -> str:
        return f"{self.prefix}.ctl.{token(sid)}"

    @property
    def ctl_wildcard(self) -> str:
        return f"{self.prefix}.ctl.*"

    def tool_answers(self, sid: str) -> str:
        return f"{self.prefix}.toolres.{token(sid)}"

    @property
    def tts_speak(self) -> str:
        return f"{self.prefix}.tts.speak"

    @property
    def realtime_claim(self) -> str:
        return f"{self.prefix}.realtime.claim"

    def caps(self, kind: str) -> str:
        return f"{self.prefix}.caps.{token(kind)}"

    def room(self, room: str) -> str:
        return f"{self.prefix}.room.{token(room)}"

    # JetStream
    @property
    def out_stream(self) -> str:
        return f"{self.prefix.upper()}_OUT"

    @property
    def work_stream(self) -> str:
        return f"{self.prefix.upper()}_WORK"

    @property
    def out_wildcard(self) -> str:
        return f"{self.prefix}.out.>"

    @property
    def work_wildcard(self) -> str:
        return f"{self.prefix}.work.>"

    def service_name(self, kind: str) -> str:
        return f"{self.prefix}-{token(kind)}"
