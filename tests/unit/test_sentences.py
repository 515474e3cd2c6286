"""SentenceStreamer: complete sentences out of streamed text, as soon as each one ends."""

from __future__ import annotations

import re

import pytest

from services.tools.llm.sentences import SentenceStreamer, cut_point, ends_sentence


def tokens(text: str) -> list[str]:
    """Roughly how a model streams: words with their leading space."""
    return re.findall(r"\s*\S+|\s+$", text)


def stream(text: str, pieces: list[str] | None = None, **kw) -> list[str]:
    streamer = SentenceStreamer(**kw)
    out: list[str] = []
    for piece in pieces if pieces is not None else tokens(text):
        out += streamer.feed(piece)
    return out + streamer.flush()


@pytest.mark.parametrize("text, sentences", [
    ("Sure. I can help!", ["Sure.", "I can help!"]),
    ("Is it? Yes… it is.", ["Is it?", "Yes…", "it is."]),
    ("Wait... what?! No way.", ["Wait...", "what?!", "No way."]),
    ("It costs 3.5 dollars. Cheap.", ["It costs 3.5 dollars.", "Cheap."]),
    ("Dr. Smith and Mrs. Jones met St. Peter.", ["Dr. Smith and Mrs. Jones met St. Peter."]),
    ("Fruit, e.g. apples, vs. pears. Done.", ["Fruit, e.g. apples, vs. pears.", "Done."]),
    ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
    ("Meet at 5 p.m. today. Or at 6 p.m. Fine?", ["Meet at 5 p.m. today.", "Or at 6 p.m.",
                                                  "Fine?"]),
    ("Apples, pears, etc. and more. No. I refuse.", ["Apples, pears, etc. and more.", "No.",
                                                     "I refuse."]),
    ("See No. 5 please.", ["See No. 5 please."]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("(As planned.) Next.", ["(As planned.)", "Next."]),
    ("Visit example.com today.", ["Visit example.com today."]),
    ("In 2024. Then 2025.", ["In 2024.", "Then 2025."]),
    ("Steps:\n1. Open it.\n2. Close it.", ["Steps:", "1. Open it.", "2. Close it."]),
    ("Line one\n\nLine two", ["Line one", "Line two"]),
    ("你好。我很好！谢谢", ["你好。", "我很好！", "谢谢"]),
    ("no ending at all", ["no ending at all"]),
    ("", []),
    ("   \n  ", []),
])  # fmt: skip
def test_sentences(text, sentences):
    assert stream(text) == sentences
    assert stream(text, list(text)) == sentences  # one character at a time
    assert stream(text, [text]) == sentences  # all at once


def test_a_sentence_comes_out_as_soon_as_it_is_known_complete():
    streamer = SentenceStreamer()
    assert streamer.feed("Hello") == []
    assert streamer.feed(" there.") == []  # "there.5" is still possible
    assert streamer.feed(" How") == ["Hello there."]
    assert streamer.feed(" are you?") == []
    assert streamer.feed("\n") == ["How are you?"]
    assert streamer.flush() == []


def test_a_decimal_split_between_deltas_is_not_cut():
    assert stream("", ["It is 3", ".", "5", " degrees. ", "Warm."]) == [
        "It is 3.5 degrees.", "Warm."]


def test_an_abbreviation_waits_for_the_next_word():
    streamer = SentenceStreamer()
    assert streamer.feed("We close at 9 p.m. ") == []  # "today" or "Tomorrow"?
    assert streamer.feed("Tomorrow too.") == ["We close at 9 p.m."]
    assert streamer.flush() == ["Tomorrow too."]


def test_run_on_text_is_cut_at_max_chars():
    text = "word " * 60 + "and, finally, the end"
    sentences = stream(text, max_chars=40)
    assert all(len(s) <= 40 for s in sentences)
    assert " ".join(sentences).split() == text.split()  # nothing lost, nothing doubled


def test_run_on_text_prefers_a_clause_mark():
    streamer = SentenceStreamer(max_chars=40)
    out = streamer.feed("first part, second part that goes on and on and on")
    assert out[0] == "first part,"


def test_one_endless_word_is_cut_anywhere():
    assert stream("x" * 50, max_chars=20) == ["x" * 20, "x" * 20, "x" * 10]


def test_flush_resets_for_the_next_turn():
    streamer = SentenceStreamer()
    streamer.feed("Unfinished")
    assert streamer.flush() == ["Unfinished"]
    assert streamer.feed("Next turn. ") == ["Next turn."]


@pytest.mark.parametrize("before, mark, after, verdict", [
    ("Hello", ". ", None, True),
    ("Call Dr", ". ", "Who", False),
    ("at 5 p.m", ". ", None, None),
    ("at 5 p.m", ". ", "today", False),
    ("at 5 p.m", ". ", "Then", True),
    ("Really", "? ", None, True),
    ("2", ". ", "Then", False),  # "2." numbering a list item
    ("plan B", ". ", "Then", False),  # an initial, as far as we can tell
])  # fmt: skip
def test_ends_sentence(before, mark, after, verdict):
    assert ends_sentence(before, mark, after) is verdict


def test_cut_point():
    assert cut_point("aaa bbb ccc", 6) == 3
    assert cut_point("aa, bb cc", 8) == 4
    assert cut_point("abcdefgh", 4) == 4


def test_max_chars_is_validated():
    with pytest.raises(ValueError):
        SentenceStreamer(max_chars=5)
