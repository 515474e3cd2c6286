"""The routing slip of a final transcript: pure, computed once per utterance."""

from __future__ import annotations

from collections import defaultdict

from shared.messages import Listener, Route, TranslateWork


def translate_work(
    route: Route, speaker: str, utterance_id: str, text: str, language: str, principal: str = "anonymous"
) -> list[TranslateWork]:
    """One unit of translation work per target language that some listener needs.

    Listeners who speak the speaker's language get the captions only: there is nothing to
    translate, and they hear the speaker directly in a room.
    """
    by_language: dict[str, list[Listener]] = defaultdict(list)
    for listener in route.listeners:
        if listener.language != language:
            by_language[listener.language].append(listener)
    return [
        TranslateWork(
            speaker=speaker,
            utterance_id=utterance_id,
            text=text,
            source_language=language,
            target_language=target,
            listeners=tuple(listeners),
            principal=principal,
        )
        for target, listeners in sorted(by_language.items())
    ]


def solo_route(sid: str, target_language: str, output_sample_rate: int, voice: str | None) -> Route:
    """A person alone hears their own speech rendered into `target_language`."""
    return Route(
        captions_to=(sid,),
        listeners=(Listener(sid, target_language, output_sample_rate, voice),),
    )


def room_route(speaker: str, members: list[Listener]) -> Route:
    """In a room everyone gets the captions; every other member hears the translation."""
    return Route(
        captions_to=tuple(sorted({m.sid for m in members} | {speaker})),
        listeners=tuple(m for m in members if m.sid != speaker),
    )
