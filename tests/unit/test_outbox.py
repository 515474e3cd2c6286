"""The edge's bounded outbox: partials are shed oldest first, nothing else ever is."""

from __future__ import annotations

from services.edge.delivery import Outbox


def partial(n: int) -> dict:
    return {"type": "transcript.partial", "text": f"p{n}"}


def final(n: int) -> dict:
    return {"type": "transcript.final", "text": f"f{n}"}


def drain(box: Outbox) -> list[tuple[int, str | None]]:
    out = []
    while (item := box.pop()) is not None:
        out.append((item[0], item[1]["text"] if item[1] else None))
    return out


def test_under_the_limit_everything_stays_in_order():
    box = Outbox(max_events=4)
    for seq, event in enumerate([partial(1), final(1), None], start=1):
        assert box.push(seq, event) == 0
    assert drain(box) == [(1, "p1"), (2, "f1"), (3, None)]


def test_full_box_sheds_the_oldest_partials_and_keeps_their_seq():
    box = Outbox(max_events=3)
    pushed = [partial(1), partial(2), final(1), partial(3)]
    shed = [box.push(seq, event) for seq, event in enumerate(pushed, start=1)]
    assert shed == [0, 0, 0, 1]
    assert not box.overflowing
    assert drain(box) == [(2, "p2"), (3, "f1"), (4, "p3")]


def test_seqs_with_nothing_to_send_are_shed_like_partials():
    box = Outbox(max_events=2)
    for seq, event in enumerate([None, final(1), partial(1), None], start=1):
        box.push(seq, event)
    assert drain(box) == [(2, "f1"), (4, None)]


def test_a_box_of_durable_events_overflows_instead_of_losing_one():
    box = Outbox(max_events=2)
    for seq in range(1, 4):
        assert box.push(seq, final(seq)) == 0
    assert box.overflowing
    assert [text for _, text in drain(box)] == ["f1", "f2", "f3"]
