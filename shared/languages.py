"""Language tags, and what "any language" means for engines that accept every language."""

from __future__ import annotations

import asyncio

ANY = "*"  # in a Capabilities pair: any source or any target

# Every language the benchmark engines accept: the primary tags of espeak-ng's voices plus
# other common ones, so any session configuration of a benchmark run is served.
BENCH_LANGUAGES = frozenset(
    """af am an ar as az ba be bg bn bpy bs ca ceb chr cmn co cs cv cy da de el en eo es et
    eu fa fi fil fo fr fy ga gd gl gn grc gu ha hak haw hbs he hi hmn hr ht hu hy hyw ia id
    ig io is it ja jbo jv ka kaa kk kl km kn ko kok ku ky la lb lfn lo lt ltg lv mg mi mk ml
    mn mr ms mt mto my nb nci ne nl no nog ny om or pa pap piqd pl ps pt py qdb qu quc qya ro
    ru rw sd sh shn si sjn sk sl sm smj sn so sq sr st su sv sw ta te tg th ti tk tl tn tr
    tt ug uk ur uz vi xex xh yi yo yue zh zu""".split()
)


def primary_tag(language: str) -> str:
    return language.split("-")[0].split("_")[0].lower()


def supports_pair(pairs, source: str, target: str) -> bool:
    return any(s in (source, ANY) and t in (target, ANY) for s, t in pairs)


async def bench_delay(delay_ms: float) -> None:
    """The benchmark engines' stand-in for a real engine's time."""
    if delay_ms > 0:  # no sleep(0): at zero delay the engine must not even yield
        await asyncio.sleep(delay_ms / 1000)
