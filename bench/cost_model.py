"""What a 10-minute, two-person translated call costs, computed by the meter's own prices.

    .venv/bin/python -m bench.cost_model [--prices PATH]

It builds the `Usage` records such a call makes providers report (through
`shared.usage.record`, inside `metering()`, as the adapters do), then prices them with
`shared.cost.PriceTable` — the same path a live session's cost takes. One run per chain:
the budget chain, each fallback substituted in turn, OpenAI alone, all local.
docs/COSTS.md shows the output and discusses it.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, fields, replace

from shared.cost import PriceTable
from shared.usage import Usage, metering, record

# Billed on the time their socket is open (docs/COSTS.md), not on the audio sent.
SESSION_BILLED_STT = {"assemblyai"}


@dataclass(frozen=True)
class Assumptions:
    call_s: float = 600.0  # the call lasts 10 minutes ...
    speakers: int = 2  # ... between two people ...
    speech_s_per_speaker: float = 300.0  # ... who each speak half of it
    words_per_minute: float = 150.0  # conversational English
    words_per_utterance: float = 15.0  # ~6 s of speech between pauses
    chars_per_word: float = 6.0  # letters + space + punctuation (English averages ~5.9)
    tokens_per_word: float = 1.33  # OpenAI's rule of thumb: a token is ~3/4 of a word
    prompt_tokens: int = 110  # the translator's system prompt (423 chars) + chat framing
    endpoint_pad_s: float = 0.5  # audio sent per utterance beyond speech: 0.2 pre-roll + 0.3 end

    @property
    def utterances_per_speaker(self) -> int:
        words = self.words_per_minute * self.speech_s_per_speaker / 60
        return round(words / self.words_per_utterance)


@dataclass(frozen=True)
class Chain:
    label: str
    stt: tuple[str, str]  # (provider, model) as the adapters report them
    translate: tuple[str, str]
    tts: tuple[str, str]


BUDGET = Chain("budget: AssemblyAI + gpt-4.1-nano + Unreal Speech",
               ("assemblyai", "universal-streaming-english"), ("openai", "gpt-4.1-nano"),
               ("unrealspeech", "stream"))
OPENAI_STT = ("openai", "gpt-4o-mini-transcribe")
OPENAI_TTS = ("openai", "gpt-4o-mini-tts")
CHAINS = [
    BUDGET,
    replace(BUDGET, label="STT fallback: gpt-4o-mini-transcribe", stt=OPENAI_STT),
    replace(BUDGET, label="STT fallback: whisper-1", stt=("openai", "whisper-1")),
    replace(BUDGET, label="translation fallback: gpt-4.1-mini",
            translate=("openai", "gpt-4.1-mini")),
    replace(BUDGET, label="TTS fallback: gpt-4o-mini-tts", tts=OPENAI_TTS),
    replace(BUDGET, label="TTS fallback: tts-1", tts=("openai", "tts-1")),
    Chain("OpenAI alone: mini-transcribe + nano + mini-tts", OPENAI_STT,
          ("openai", "gpt-4.1-nano"), OPENAI_TTS),
    Chain("all local: pocketsphinx + apertium + espeak-ng", ("local", "pocketsphinx"),
          ("local", "apertium"), ("local", "espeak-ng")),
]


def speaker_usage(chain: Chain, a: Assumptions) -> None:
    """Record what one speaker's half of the call makes the providers report."""
    n = a.utterances_per_speaker
    utterance_s = a.speech_s_per_speaker / n
    tokens = round(a.words_per_utterance * a.tokens_per_word)
    if chain.stt[0] in SESSION_BILLED_STT:
        record(Usage(*chain.stt, "stt", audio_seconds=a.call_s))  # open for the whole call
    for _ in range(n):
        if chain.stt[0] not in SESSION_BILLED_STT:
            record(Usage(*chain.stt, "stt", audio_seconds=utterance_s + a.endpoint_pad_s))
        # The other person's language: every final is translated once and spoken once.
        if chain.translate[0] == "local":  # local engines count no tokens
            record(Usage(*chain.translate, "translate"))
        else:
            record(Usage(*chain.translate, "translate",
                         input_tokens=a.prompt_tokens + tokens, output_tokens=tokens))
        record(Usage(*chain.tts, "tts", characters=round(a.words_per_utterance * a.chars_per_word)))


def call_usage(chain: Chain, a: Assumptions) -> list[Usage]:
    with metering() as meter:
        for _ in range(a.speakers):
            speaker_usage(chain, a)
    return meter.records


@dataclass
class Line:
    usd: float = 0.0
    audio_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    characters: int = 0


def bill(table: PriceTable, usages: list[Usage]) -> dict[tuple[str, str, str], Line]:
    """Cost and units per (capability, provider, model), in the order first seen."""
    lines: dict[tuple[str, str, str], Line] = defaultdict(Line)
    for usage in usages:
        line = lines[(usage.capability, usage.provider, usage.model)]
        line.usd += table.cost_usd(usage)
        for f in fields(Line)[1:]:
            setattr(line, f.name, getattr(line, f.name) + getattr(usage, f.name))
    return lines


def units(line: Line) -> str:
    parts = ["nothing metered"] if not (line.audio_seconds or line.input_tokens
                                       or line.characters) else []
    if line.audio_seconds:
        parts.append(f"{line.audio_seconds / 60:.1f} audio min")
    if line.input_tokens or line.output_tokens:
        parts.append(f"{line.input_tokens:,} in + {line.output_tokens:,} out tokens")
    if line.characters:
        parts.append(f"{line.characters:,} chars")
    return ", ".join(parts)


def report(table: PriceTable, a: Assumptions) -> str:
    out = ["Assumptions: " + ", ".join(f"{f.name}={getattr(a, f.name)}" for f in fields(a)),
           f"  → {a.utterances_per_speaker} utterances per speaker, "
           f"{a.speakers * a.utterances_per_speaker} translated and spoken in all", ""]
    totals = []
    for chain in CHAINS:
        lines = bill(table, call_usage(chain, a))
        total = sum(line.usd for line in lines.values())
        totals.append((chain.label, total))
        out.append(f"{chain.label}")
        for (capability, provider, model), line in lines.items():
            out.append(f"  {capability:<9} {provider + '/' + model:<40} "
                       f"${line.usd:>8.4f}  ({units(line)})")
        out.append(f"  {'total':<50} ${total:>8.4f}")
        out.append("")
    out.append("Summary")
    out += [f"  {label:<52} ${total:>8.4f}" for label, total in totals]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices",
                        help="a price table (default: $PARLEY_PRICES, else shared/prices.toml)")
    args = parser.parse_args(argv)
    print(report(PriceTable.load(args.prices), Assumptions()))


if __name__ == "__main__":
    main()
