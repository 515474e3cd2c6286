"""Sentences out of a model's streamed text, each as soon as it is complete (pure).

Speech can then start on the first sentence while the model is still writing the rest.
A Latin sentence is complete when whitespace follows its `.`, `!`, `?` or `…` (and any
closing quotes or brackets): until then "3." may become "3.5". A CJK `。！？` needs no
space after it; a line break ends a line of text (lists, paragraphs).

Not every full stop ends a sentence: titles ("Dr. Smith") and single initials never do;
"e.g." and "vs." never do; "etc.", "a.m.", "No." and the like do when the next word
starts with a capital letter. Text that runs on without any of these is cut at
`max_chars`, at the last clause mark or space before it, so speech never waits for long.
"""

from __future__ import annotations

import re

_CLOSERS = re.escape("\"'”’»)]}」』")  # may follow the mark inside the sentence
_BOUNDARY = re.compile(
    rf"[.!?…]+[{_CLOSERS}]*\s+"  # Latin: complete once whitespace follows
    rf"|[。！？]+[{_CLOSERS}]*(?=\S)"  # CJK: complete once anything follows
    r"|\n\s*"  # a line break
)
_CLAUSE_CUT = re.compile(r"[,;:—–]\s")
_LAST_WORD = re.compile(r"(\S+)$")

# Always followed by a name or a number: their full stop never ends a sentence.
NEVER_FINAL = frozenset({
    "mr", "mrs", "ms", "mx", "dr", "prof", "st", "rev", "hon", "gen", "col", "capt", "lt",
    "sgt", "fr", "mt", "ft", "vs", "cf", "e.g", "i.e", "viz", "approx", "fig", "ca",
})
# End a sentence now and then: only when a capital letter follows.
FINAL_BEFORE_CAPITAL = frozenset({
    "etc", "a.m", "p.m", "jr", "sr", "inc", "ltd", "co", "corp", "no", "nos", "u.s", "u.k",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})


def _word_before(text: str) -> str:
    """The word before a full stop, lower-cased, without the stop and leading brackets."""
    match = _LAST_WORD.search(text)
    return match.group(1).lstrip("([{\"'“‘«").lower() if match else ""


def ends_sentence(before: str, mark: str, after: str | None) -> bool | None:
    """Whether `mark` (terminators and whitespace) ends the sentence `before` it.

    `after` is the text that follows, None while it has not arrived; the answer is None
    when it depends on that text.
    """
    if not mark.startswith(".") or mark.startswith(".."):
        return True  # ! ? … and line breaks always end; so does an ellipsis
    word = _word_before(before)
    if word in NEVER_FINAL or (len(word) == 1 and word.isalpha()):
        return False
    if word.isdigit() and word == before.strip():
        return False  # "1." numbering a list item
    if word in FINAL_BEFORE_CAPITAL:
        if not after:
            return None
        return after[0].isupper()
    return True


def cut_point(text: str, max_chars: int) -> int:
    """Where to cut run-on text to at most `max_chars`: after a clause mark, else at a space,
    else anywhere (one endless word)."""
    window = text[: max_chars + 1]
    clauses = [m.end() for m in _CLAUSE_CUT.finditer(window) if m.end() <= max_chars]
    if clauses:
        return clauses[-1]
    space = window.rfind(" ")
    return space if space > 0 else max_chars


class SentenceStreamer:
    """Feed text deltas, get complete sentences; `flush()` at the end of the turn."""

    def __init__(self, max_chars: int = 250) -> None:
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.max_chars = max_chars
        self._pending = ""

    def feed(self, text: str) -> list[str]:
        self._pending += text
        sentences = self._complete_sentences()
        while len(self._pending) > self.max_chars:
            cut = cut_point(self._pending, self.max_chars)
            sentences += self._take(cut)
        return sentences

    def flush(self) -> list[str]:
        """The rest of the turn (an unfinished sentence is still a sentence); ready for
        the next turn afterwards."""
        rest, self._pending = self._pending.strip(), ""
        return [rest] if rest else []

    def _complete_sentences(self) -> list[str]:
        sentences: list[str] = []
        search_from = 0
        while match := _BOUNDARY.search(self._pending, search_from):
            after = self._pending[match.end():] or None
            verdict = ends_sentence(self._pending[: match.start()], match.group(), after)
            if verdict is None:
                break  # decided by the next word, which has not arrived yet
            if verdict:
                sentences += self._take(match.end())
                search_from = 0
            else:
                search_from = match.end()
        return sentences

    def _take(self, end: int) -> list[str]:
        sentence, self._pending = self._pending[:end].strip(), self._pending[end:].lstrip()
        return [sentence] if sentence else []
